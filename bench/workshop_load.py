"""How many workshop participants one (GPU) box holds: N kernels started as the workshop hub starts them, each
running a scripted participant, for growing N until something gives.

Each kernel is a separate Python process with the environment the hub gives a participant's server (its GPU share
SMOLKIT_GPU_MEMORY_FRACTION = 0.85 / N, OMP_NUM_THREADS = cores / N, the shared model cache, offline, a home of its
own). It loads the embedded model, computes one next-token distribution, and then, for --seconds, plays a
participant: slider moves on the cached logits (``Distribution.with_params`` and the top-10 readout, what an
explorer recomputes per move) at --slider-hz, and a ``smolkit.generate`` of --samples x --tokens every
--generate-every seconds (staggered: participants do not click at the same moment). All N start together.

Per N it reports the slider-update p95, the generate-latency p95 (each call timed to its end), the GPU memory of a
kernel (torch.cuda.max_memory_allocated in each, and what the GPU had in use under load), the warm-up (model load
plus first generate) and the first failure: a kernel that died or failed (out of memory: the message of
smolkit.gpu_share), or a p95 over budget (--slider-budget-ms, --generate-budget-s). The sweep stops after the
first N where something gave (--keep-going runs every N), or when --minutes would be exceeded.

Needs torch, transformers, safetensors and the repository only (no Jupyter). Prints a table, writes JSON (--out).

    python bench/workshop_load.py --n 4,16,32,48,64 --out bench/results-workshop-gpu.json     # a GPU box
    python bench/workshop_load.py --n 1,2,4 --seconds 20 --out bench/results-workshop-cpu.json  # this CPU box
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Write a short story about a robot who learns to paint."
SLIDER_PROMPT = "What is the capital of France?"


# -- one participant's kernel ---------------------------------------------------------------------------------------


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(args: argparse.Namespace) -> None:
    """One kernel: load, warm up, say "ready", wait for "go", play a participant, print the result as JSON."""
    import torch

    import smolkit
    from smolkit.gpu_share import out_of_memory

    rng = random.Random(args.index)
    stage = "load"
    try:
        started = time.perf_counter()
        lm = smolkit.load_model(device=args.device)
        device = lm.device
        with out_of_memory(device):
            dist = smolkit.next_token_distribution(lm, SLIDER_PROMPT)
            params = smolkit.SamplingParams(
                n=args.samples, max_new_tokens=args.tokens, temperature=0.8, top_p=0.9, seed=args.index
            )
            stage = "warm-up"
            smolkit.generate(lm, PROMPT, params)
            sync(device)
            dist.with_params(temperature=0.7).top(10)
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        report("ready", warmup_s=time.perf_counter() - started, gpu=gpu, torch=torch.__version__)
        if sys.stdin.readline().strip() != "go":
            return
        stage = "workshop load"
        with out_of_memory(device):
            result = play(lm, dist, params, args, rng)
        result.update(memory(device))
        report("result", **result)
    except Exception as err:  # the first failure is what the bench reports: keep its kind and message
        report("error", stage=stage, type=type(err).__name__, message=str(err)[:2000])
        sys.exit(1)


def play(lm, dist, params, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """The scripted participant: slider moves at --slider-hz, a generate every --generate-every seconds."""
    import smolkit

    slider, generate = [], []
    start = time.perf_counter()
    deadline = start + args.seconds
    next_generate = start + rng.uniform(0, args.generate_every)  # participants do not click together
    while time.perf_counter() < deadline:
        now = time.perf_counter()
        if now >= next_generate:
            t = time.perf_counter()
            smolkit.generate(lm, PROMPT, params.replace(seed=rng.randrange(2**31)))
            sync(lm.device)
            generate.append(time.perf_counter() - t)
            next_generate += args.generate_every
            continue
        t = time.perf_counter()
        moved = dist.with_params(temperature=rng.uniform(0.1, 1.5), top_p=rng.uniform(0.5, 1.0), top_k=-1)
        moved.top(10)  # the explorer's readout
        slider.append(time.perf_counter() - t)
        time.sleep(max(0.0, 1 / args.slider_hz - (time.perf_counter() - t)))
    return {"slider_s": slider, "generate_s": generate}


def memory(device) -> dict[str, Any]:
    import torch

    if device.type != "cuda":
        return {"max_allocated_gb": None, "gpu_used_gb": None, "gpu_total_gb": None}
    free, total = torch.cuda.mem_get_info(device)
    return {
        "max_allocated_gb": torch.cuda.max_memory_allocated(device) / 1e9,
        "gpu_used_gb": (total - free) / 1e9,
        "gpu_total_gb": total / 1e9,
    }


def report(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


# -- the sweep ------------------------------------------------------------------------------------------------------


def kernel_env(n: int, index: int, home: Path, args: argparse.Namespace) -> dict[str, str]:
    """The environment the workshop hub gives a participant's server (environment/jupyterhub_config.py)."""
    from smolkit.embedded import cache_dir

    env = {k: v for k, v in os.environ.items() if not k.startswith("SMOLKIT_")}
    env.update(
        HOME=str(home),
        SMOLKIT_CACHE_DIR=str(cache_dir()),
        HF_HUB_OFFLINE="1",
        SMOLKIT_GPU_MEMORY_FRACTION=f"{args.fraction or 0.85 / n:.4g}",
        PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True",
        OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // n)),
        TORCHINDUCTOR_CACHE_DIR=str(args.compile_cache),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    return env


def start_kernels(n: int, args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    """Start ``n`` kernel processes at once; each gets a reader thread that queues its JSON lines."""
    kernels = []
    for index in range(n):
        home = scratch / f"home-{n}-{index}"
        home.mkdir(parents=True, exist_ok=True)
        log = open(scratch / f"kernel-{n}-{index}.log", "w")  # noqa: SIM115 (closed in stop_kernels)
        cmd = [sys.executable, __file__, "--worker", "--index", str(index), *worker_args(args)]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            env=kernel_env(n, index, home, args), cwd=home, start_new_session=True,
        )  # fmt: skip
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True).start()
        kernels.append({"index": index, "proc": proc, "lines": lines, "log": log, "events": {}})
    return kernels


def pump(stream, lines: queue.Queue) -> None:
    """Queue every line of ``stream``, then None when it closes (the kernel exited)."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def worker_args(args: argparse.Namespace) -> list[str]:
    return [
        "--device", args.device, "--seconds", str(args.seconds), "--samples", str(args.samples),
        "--tokens", str(args.tokens), "--generate-every", str(args.generate_every), "--slider-hz", str(args.slider_hz),
    ]  # fmt: skip


def wait_event(kernel: dict[str, Any], event: str, timeout: float) -> dict[str, Any] | None:
    """The kernel's next ``event`` line (or its error line), None when it said nothing in time or died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = kernel["lines"].get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            return None
        try:
            message = json.loads(line)
        except ValueError:  # a library's own output on stdout
            continue
        if isinstance(message, dict) and message.get("event") in (event, "error"):
            kernel["events"][message["event"]] = message
            return message
    return None


def stop_kernels(kernels: list[dict[str, Any]]) -> None:
    for kernel in kernels:
        proc = kernel["proc"]
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        kernel["log"].close()


def log_tail(path: Path, lines: int = 8) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def run_n(n: int, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Start n kernels, let them warm up, start them together, collect their figures and the first failure."""
    kernels = start_kernels(n, args, scratch)
    failures: list[str] = []
    try:
        ready = [wait_event(k, "ready", args.startup_timeout) for k in kernels]
        for kernel, message in zip(kernels, ready, strict=True):
            if message is None or message["event"] == "error":
                failures.append(describe_failure(kernel, message, scratch, n, "warm-up"))
        if not failures:
            for kernel in kernels:
                kernel["proc"].stdin.write("go\n")
                kernel["proc"].stdin.flush()
            results = [wait_event(k, "result", args.seconds + args.generate_timeout) for k in kernels]
            for kernel, message in zip(kernels, results, strict=True):
                if message is None or message["event"] == "error":
                    failures.append(describe_failure(kernel, message, scratch, n, "load"))
    finally:
        stop_kernels(kernels)
    return summarise(n, kernels, failures, args)


def describe_failure(kernel, message, scratch: Path, n: int, stage: str) -> str:
    if message is not None:
        return f"kernel {kernel['index']}, {message['stage']}: {message['type']}: {message['message'][:300]}"
    code, log = kernel["proc"].poll(), scratch / f"kernel-{n}-{kernel['index']}.log"
    why = f"exited with {code}" if code is not None else "gave no answer in time"
    return f"kernel {kernel['index']}, {stage}: {why}: {log_tail(log)}"


def p95(values: list[float]) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def summarise(n: int, kernels: list[dict[str, Any]], failures: list[str], args) -> dict[str, Any]:
    results = [k["events"].get("result") for k in kernels if k["events"].get("result")]
    slider = [s for r in results for s in r["slider_s"]]
    generate = [s for r in results for s in r["generate_s"]]
    warmups = [k["events"]["ready"]["warmup_s"] for k in kernels if k["events"].get("ready")]
    allocated = [r["max_allocated_gb"] for r in results if r["max_allocated_gb"] is not None]
    used = [r["gpu_used_gb"] for r in results if r["gpu_used_gb"] is not None]
    row = {
        "n": n,
        "kernels_ok": len(results),
        "slider_updates": len(slider),
        "slider_p50_ms": statistics.median(slider) * 1e3 if slider else None,
        "slider_p95_ms": p95(slider) * 1e3 if slider else None,
        "generates": len(generate),
        "generate_p50_s": statistics.median(generate) if generate else None,
        "generate_p95_s": p95(generate),
        "warmup_max_s": max(warmups) if warmups else None,
        "max_allocated_gb_per_kernel": max(allocated) if allocated else None,
        "gpu_used_gb": max(used) if used else None,
        "gpu_total_gb": results[0]["gpu_total_gb"] if results else None,
        "share": args.fraction or 0.85 / n,
        "failures": failures,
    }
    over = []
    if row["slider_p95_ms"] is not None and row["slider_p95_ms"] > args.slider_budget_ms:
        over.append(f"slider p95 {row['slider_p95_ms']:.1f} ms > {args.slider_budget_ms:g} ms")
    if row["generate_p95_s"] is not None and row["generate_p95_s"] > args.generate_budget_s:
        over.append(f"generate p95 {row['generate_p95_s']:.2f} s > {args.generate_budget_s:g} s")
    row["first_failure"] = (failures or over or [None])[0]
    return row


def warm_compile_cache(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """One kernel alone first: converts the embedded model if needed and fills the shared compile cache, so that
    N kernels starting at once neither race on the model cache nor all compile from nothing (as `workshop.sh
    prepare` converts the model once). Returns what that kernel said when ready (its GPU, its warm-up)."""
    started = time.perf_counter()
    kernels = start_kernels(1, argparse.Namespace(**{**vars(args), "seconds": 0.1}), scratch / "warm")
    try:
        ready = wait_event(kernels[0], "ready", args.startup_timeout)
        if ready is None or ready["event"] == "error":
            failure = describe_failure(kernels[0], ready, scratch / "warm", 1, "warm-up")
            raise SystemExit(f"the first kernel failed: {failure}")
    finally:
        stop_kernels(kernels)
    return {**ready, "elapsed_s": time.perf_counter() - started}


def table(rows: list[dict[str, Any]]) -> str:
    def fmt(value, spec):
        return "-".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)

    lines = ["    N  share  slider p95 ms  generate p95 s  GPU GB/kernel  GPU used GB  warm-up s  first failure"]
    for r in rows:
        lines.append(
            f"{r['n']:>5}  {r['share']:.3f}  {fmt(r['slider_p95_ms'], '13.1f')}  {fmt(r['generate_p95_s'], '14.2f')}"
            f"  {fmt(r['max_allocated_gb_per_kernel'], '13.2f')}  {fmt(r['gpu_used_gb'], '11.1f')}"
            f"  {fmt(r['warmup_max_s'], '9.1f')}  {r['first_failure'] or 'none'}"
        )
    return "\n".join(lines)


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="smolkit-workshop-load-"))
    args.compile_cache = args.compile_cache or scratch / "inductor"
    started, rows = time.perf_counter(), []
    try:
        warm = warm_compile_cache(args, scratch)
        print(f"first kernel alone (model cache checked, compile cache filled): {warm['elapsed_s']:.1f} s, "
              f"{warm['gpu'] or 'CPU'}", flush=True)  # fmt: skip
        for n in args.n:
            if rows and time.perf_counter() - started + 2 * (rows[-1]["elapsed_s"]) > args.minutes * 60:
                print(f"N={n}: skipped, the sweep would pass --minutes {args.minutes:g}", flush=True)
                break
            t = time.perf_counter()
            row = run_n(n, args, scratch)
            row["elapsed_s"] = time.perf_counter() - t
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
            if row["first_failure"] and not args.keep_going:
                break
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    keys = ("device", "seconds", "samples", "tokens", "generate_every", "slider_hz", "fraction", "n")
    found = {k: getattr(args, k) for k in keys} | {"cpus": os.cpu_count(), "gpu": warm["gpu"], "torch": warm["torch"]}
    return {"settings": found, "first_kernel_s": warm["elapsed_s"], "total_s": time.perf_counter() - started,
            "rows": rows}  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", default="4,16,32,48,64", help="kernel counts to try, in order (default 4,16,32,48,64)")
    p.add_argument("--seconds", type=float, default=30, help="how long each N runs its participants (default 30)")
    p.add_argument("--samples", type=int, default=8, help="continuations per generate (default 8)")
    p.add_argument("--tokens", type=int, default=64, help="tokens per continuation (default 64)")
    p.add_argument("--generate-every", type=float, default=4, help="seconds between a kernel's generates (4)")
    p.add_argument("--slider-hz", type=float, default=10, help="slider moves per second while dragging (10)")
    p.add_argument("--fraction", type=float, default=None, help="GPU share per kernel (default 0.85 / N)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--slider-budget-ms", type=float, default=50)
    p.add_argument("--generate-budget-s", type=float, default=1.0)
    p.add_argument("--keep-going", action="store_true", help="run every N, also after something gave")
    p.add_argument("--minutes", type=float, default=9, help="stop before an N that would pass this (default 9)")
    p.add_argument("--startup-timeout", type=float, default=300, help="seconds for N kernels to warm up (300)")
    p.add_argument("--generate-timeout", type=float, default=120, help="seconds past --seconds to finish (120)")
    p.add_argument("--compile-cache", type=Path, default=None, help="shared TORCHINDUCTOR_CACHE_DIR (a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.n = [int(v) for v in str(args.n).split(",") if v.strip()]
    if not args.n or min(args.n) < 1:
        p.error(f"--n must list kernel counts >= 1, got {args.n}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        return worker(args)
    results = sweep(args)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nworkshop load, {results['settings']['gpu'] or 'CPU'} ({results['settings']['cpus']} cores), "
          f"{args.samples} x {args.tokens} every {args.generate_every:g} s, sliders at {args.slider_hz:g} Hz, "
          f"{args.seconds:g} s per N, {results['total_s']:.0f} s in all:")  # fmt: skip
    print(table(results["rows"]))


if __name__ == "__main__":
    main()
