"""How many workshop participants one (GPU) box holds: N kernels started as the workshop hub starts them, each
running a scripted participant, for growing N until something gives.

Each kernel is a separate Python process with the environment the hub gives a participant's server (the hub's
split of the GPU for N participants, workshop/gpu_split.py: N seats, SMOLKIT_GPU_SEATS, and a memory share each,
SMOLKIT_GPU_MEMORY_FRACTION; OMP_NUM_THREADS = cores / N, the shared model cache, offline, a home of its own).
It loads the embedded model, computes one next-token distribution, and then, for --seconds, plays a participant:
slider moves on the cached logits (``Distribution.with_params`` and the top-10 readout, what an
explorer recomputes per move) at --slider-hz, and a ``smolkit.generate`` of --samples x --tokens every
--generate-every seconds (staggered: participants do not click at the same moment). All N start together.

Per N it reports the slider-update p95, the generate-latency p95 (each call timed to its end), the GPU memory of a
kernel (torch.cuda.max_memory_allocated in each, and what the GPU had in use under load), the warm-up (model load
plus first generate) and the first failure: a kernel that died or failed (out of memory: the message of
smolkit.gpu_share), or a p95 over budget (--slider-budget-ms, --generate-budget-s). The sweep stops after the
first N where something gave (--keep-going runs every N), or when --minutes would be exceeded.

--variants compares remedies at the same N (each N runs once per variant): ``plain`` keeps the fast path in its
plain tier (SMOLKIT_COMPILE_AFTER_S=never, what the hub can set), ``compiled`` compiles it at warm-up from the
compile cache the first kernel filled (SMOLKIT_COMPILE_AFTER_S=0), ``mps`` runs the kernels as clients of NVIDIA's
Multi-Process Service (a control daemon of this run's own, private pipe and log directories), ``lazy``,
``threads1`` and ``conn1`` are cheap environment settings (see REMEDIES), and ``accounts`` runs each kernel as a
system account of its own, as the hub does (as root; the kit, the model cache and the MPS pipes staged where the
accounts can read them): ``plain+mps+accounts`` is the hub with MPS (its daemon in multi-user mode, ``-M``, as the
hub runs it: one MPS server for every account). The GPU memory of a kernel is reported
as torch's peak (max_allocated) and, with its CUDA context, as what nvidia-smi's figure grew by per kernel.
--overload starts more kernels than fit and reports, per kernel, whether it worked, saw the kit's message
(GpuShareExhausted, GpuUnavailable: no seat free) or a raw CUDA error; the kernels that came up play their window
meanwhile. --seats K splits the GPU as a hub for K participants does whatever N is (past K, kernels find no seat).

Needs torch, transformers, safetensors and the repository only (no Jupyter). Prints a table, writes JSON (--out).

    python bench/workshop_load.py --n 4,16,32,48,64 --out bench/results-workshop-gpu.json     # a GPU box
    python bench/workshop_load.py --n 16,32 --seconds 60 --variants base,plain,plain+mps      # remedies side by side
    python bench/workshop_load.py --n 64 --overload --seats 32 --seconds 20                   # past capacity
    python bench/workshop_load.py --n 1,2,4 --seconds 20 --out bench/results-workshop-cpu.json  # this CPU box
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workshop"))
import gpu_split  # noqa: E402  (workshop/, not a package) the hub's split of the GPU: seats and shares
import mps_service  # noqa: E402  the hub's MPS daemon: the bench starts the one the hub does

PROMPT = "Write a short story about a robot who learns to paint."
SLIDER_PROMPT = "What is the capital of France?"


# -- one participant's kernel ---------------------------------------------------------------------------------------


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(args: argparse.Namespace) -> None:
    """One kernel: load, warm up, say "ready", then for every "go" line play a participant for --seconds and print
    the result as JSON (the capacity planner sends several); stops at "stop" or when stdin closes."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a kernel that goes silent: its stack, into its log
    import torch

    import smolkit
    from smolkit.gpu_share import out_of_memory

    rng = random.Random(args.index)
    stage, device = "load", None
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
        report("ready", warmup_s=time.perf_counter() - started, gpu=gpu, torch=torch.__version__, pid=os.getpid(),
               reserved_gb=memory(device)["reserved_gb"])  # fmt: skip
        stage = "workshop load"
        while sys.stdin.readline().strip() == "go":
            with out_of_memory(device):
                result = play(lm, dist, params, args, rng)
            result.update(memory(device), tier=getattr(getattr(lm, "fast_decoder", None), "tier", None))
            report("result", **result)
    except Exception as err:  # the first failure is what the bench reports: keep its kind and message
        held = None
        with contextlib.suppress(Exception):  # what this kernel's torch held when it failed (none: no context)
            held = memory(device)["reserved_gb"]
        report("error", stage=stage, type=type(err).__name__, message=str(err)[:2000], pid=os.getpid(),
               reserved_gb=held)  # fmt: skip
        if args.hold_on_error:  # as a participant's kernel does: it keeps what it holds until it is stopped
            sys.stdin.read()
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
        return {"max_allocated_gb": None, "reserved_gb": None, "gpu_used_gb": None, "gpu_total_gb": None}
    free, total = torch.cuda.mem_get_info(device)
    return {
        "max_allocated_gb": torch.cuda.max_memory_allocated(device) / 1e9,
        "reserved_gb": torch.cuda.memory_reserved(device) / 1e9,
        "gpu_used_gb": (total - free) / 1e9,
        "gpu_total_gb": total / 1e9,
    }


def report(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


# -- remedies: what each kernel's environment changes, and MPS ------------------------------------------------------

REMEDIES = {
    "base": {},  # the hub's environment before issue 27 (the fast path compiles after COMPILE_AFTER_S)
    "plain": {"SMOLKIT_COMPILE_AFTER_S": "never"},  # the fast path stays in its plain tier: no compile mid-session
    # the fast path compiles at warm-up (its first generate), loading from the compile cache the first kernel filled:
    # decode steps about 3x as fast (fewer GPU kernels), so less GPU time per generate when contexts time-share it
    "compiled": {"SMOLKIT_COMPILE_AFTER_S": "0"},
    "lazy": {"CUDA_MODULE_LOADING": "LAZY"},  # CUDA loads kernels on first use (torch sets it when unset: a check)
    "threads1": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},  # one CPU thread per kernel
    "conn1": {"CUDA_DEVICE_MAX_CONNECTIONS": "1"},  # one hardware work queue per kernel instead of 8
    "mps": {},  # NVIDIA's Multi-Process Service: one GPU context shared by every kernel (mps_daemon)
    "accounts": {},  # each kernel a system account of its own, as the hub runs participants (load_accounts)
}


def parse_variants(text: str) -> list[tuple[str, ...]]:
    """'plain,plain+mps' -> [('plain',), ('mps', 'plain')]: each variant a set of REMEDIES, named in a fixed order.

    >>> parse_variants("base,plain+mps")
    [('base',), ('mps', 'plain')]
    """
    variants = []
    for item in filter(None, (v.strip() for v in text.split(","))):
        names = tuple(sorted(set(item.split("+"))))
        unknown = [n for n in names if n not in REMEDIES]
        if unknown:
            raise ValueError(f"--variants: unknown remedy {unknown[0]!r} in {item!r}; known: {', '.join(REMEDIES)}")
        variants.append(names)
    if not variants:
        raise ValueError(f"--variants must name at least one variant, got {text!r}")
    return variants


def variant_name(variant: tuple[str, ...]) -> str:
    return "+".join(variant)


class MpsUnavailable(RuntimeError):
    """The MPS control daemon is missing or would not start: the variant is reported as such, the sweep goes on."""


@contextlib.contextmanager
def mps_daemon(scratch: Path, multiuser: bool = False):
    """Start NVIDIA's MPS control daemon as the hub does (workshop/mps_service.py), with private pipe and log
    directories (so that it touches no other user's MPS), yield the environment its clients need, and quit it
    afterwards. ``multiuser`` (root only): one MPS server for clients of every account (``-M``, as the hub runs
    it), where by default a server serves one user and another user's client waits until it exits."""
    control = shutil.which(mps_service.CONTROL)
    if control is None:
        raise MpsUnavailable(f"{mps_service.CONTROL} is not on PATH: this machine has no MPS (NVIDIA's driver "
                             "utilities are needed); the variant was not run")  # fmt: skip
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(scratch / "mps-pipe"), "CUDA_MPS_LOG_DIRECTORY": str(scratch / "mps-log")}
    for path in env.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    full = {**os.environ, **env}
    started = mps_service.start_daemon(control, multiuser, full)
    if started.returncode != 0:
        raise MpsUnavailable(f"{mps_service.CONTROL} -d{' -M' if multiuser else ''} failed ({started.returncode}): "
                             f"{(started.stderr or started.stdout).strip()[:300]}")  # fmt: skip
    print(f"  MPS control daemon started{' (multi-user)' if multiuser else ''} (pipe {env['CUDA_MPS_PIPE_DIRECTORY']})",
          flush=True)  # fmt: skip
    try:
        yield env
    finally:
        mps_service.ask(control, "quit", full)
        log = Path(env["CUDA_MPS_LOG_DIRECTORY"]) / "control.log"
        tail = log_tail(log, 3) if log.exists() else "no control.log"
        print(f"  MPS control daemon stopped; its log: {tail}", flush=True)


def mps_clients(env: dict[str, str]) -> dict[str, Any]:
    """What the MPS control daemon of ``env`` serves now (mps_service.clients), as a row of the results."""
    try:
        servers = mps_service.clients(shutil.which(mps_service.CONTROL), {**os.environ, **env})
        return {"servers": len(servers), "clients": servers}
    except subprocess.TimeoutExpired:  # a daemon that does not answer is a finding, not the end of the run
        return {"error": "the MPS control daemon gave no answer in 30 s"}


@contextlib.contextmanager
def remedy_env(variant: tuple[str, ...], scratch: Path):
    """The environment a variant adds to every kernel's (MPS started for the variant's duration)."""
    env: dict[str, str] = {}
    for name in variant:
        env.update(REMEDIES[name])
    if "mps" not in variant:
        yield env
        return
    with mps_daemon(scratch, multiuser="accounts" in variant) as mps:  # accounts: one server for all, as the hub
        yield {**env, **mps}


ACCOUNT_PREFIX = "smk-load-"


class AccountsUnavailable(RuntimeError):
    """The variant needs root (useradd) to make an account per kernel: reported as such, the sweep goes on."""


@contextlib.contextmanager
def load_accounts(n: int, scratch: Path):
    """``n`` system accounts (no login, no home of their own), one per kernel as the hub's participants, removed
    afterwards; yields their (uid, gid) pairs."""
    import pwd

    if os.geteuid() != 0:
        raise AccountsUnavailable("the accounts variant makes a system account per kernel: run as root")
    names = [f"{ACCOUNT_PREFIX}{i}" for i in range(n)]
    try:
        for name in names:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                           check=True, capture_output=True)  # fmt: skip
        yield [(pwd.getpwnam(name).pw_uid, pwd.getpwnam(name).pw_gid) for name in names]
    finally:
        for name in names:
            subprocess.run(["userdel", name], capture_output=True)
            subprocess.run(["groupdel", name], capture_output=True)


def stage_for_accounts(scratch: Path) -> dict[str, str]:
    """What other accounts must read, staged in ``scratch`` (made readable): this script, the hub's MPS service and
    GPU split (which it imports) and the package (the repository may sit in root's private home), and the converted
    model cache (root's, read-only to them, as `workshop.sh prepare` leaves the shared cache). Returns the
    environment that points kernels at them."""
    from smolkit.embedded import cache_dir

    kit, cache = scratch / "kit", scratch / "model-cache"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "smolkit", kit / "smolkit", ignore=ignore)
    for script in (Path(__file__), REPO / "workshop" / "mps_service.py", REPO / "workshop" / "gpu_split.py"):
        (kit / script.parent.name).mkdir(exist_ok=True)
        shutil.copy2(script, kit / script.parent.name / script.name)
    shutil.copytree(cache_dir(), cache, ignore=shutil.ignore_patterns("*.lock", ".tmp*"))
    for path in [scratch, *scratch.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return {"SMOLKIT_CACHE_DIR": str(cache), "SMOLKIT_LOAD_KIT": str(kit)}


@contextlib.contextmanager
def accounts_for(variant: tuple[str, ...], n: int, scratch: Path):
    """The accounts of ``n`` kernels when ``variant`` asks for them (``load_accounts``), else None."""
    if "accounts" not in variant:
        yield None
        return
    with load_accounts(n, scratch) as owners:
        yield owners


# -- kernels --------------------------------------------------------------------------------------------------------


def hub_split(n: int, args: argparse.Namespace, scratch: Path) -> dict[str, str]:
    """The GPU split the hub makes for ``n`` participants (--seats, when given, instead), as its kernels' settings:
    the seat folder (in ``scratch``, made or grown to that many seats) and each kernel's share (--fraction, else
    gpu_split.kernel_fraction with --context-gb). On a box without a GPU, only a share (which the CPU ignores)."""
    seats = args.seats or n
    total = gpu_split.gpu_total_bytes() if args.device != "cpu" else None
    if total is None:
        return {"SMOLKIT_GPU_MEMORY_FRACTION": f"{args.fraction or gpu_split.USE / seats:.4g}"}
    fraction = args.fraction or gpu_split.kernel_fraction(total, seats, args.context_gb * gpu_split.GB)
    folder = gpu_split.make_seats(scratch / "gpu-seats", seats)
    return {"SMOLKIT_GPU_MEMORY_FRACTION": f"{fraction:.4g}", "SMOLKIT_GPU_SEATS": str(folder)}


def kernel_env(n: int, home: Path, args: argparse.Namespace, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the workshop hub gives a participant's server (workshop/jupyterhub_config.py) for ``n``
    participants, with a variant's ``extra`` settings (and the GPU split, ``hub_split``) on top."""
    from smolkit.embedded import cache_dir

    env = {k: v for k, v in os.environ.items() if not k.startswith("SMOLKIT_")}
    env.update(
        HOME=str(home),
        SMOLKIT_CACHE_DIR=str(cache_dir()),
        HF_HUB_OFFLINE="1",
        PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True",
        OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // n)),
        TORCHINDUCTOR_CACHE_DIR=str(args.compile_cache),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    env.update(extra or {})
    return env


def start_kernels(indices: range, n: int, args: argparse.Namespace, scratch: Path,
                  extra: dict[str, str] | None = None, owners: list | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Start the kernels ``indices`` at once (threads for ``n``; the GPU split, ``hub_split``, comes in ``extra``),
    each as the account ``owners[index]`` (uid, gid) when given; each gets a thread that queues its JSON lines."""
    kernels = []
    for index in indices:
        home = scratch / f"home-{index}"
        home.mkdir(parents=True, exist_ok=True)
        log_path = scratch / f"kernel-{index}.log"
        log = open(log_path, "w")  # noqa: SIM115 (closed in stop_kernels)
        env, script, who = kernel_env(n, home, args, extra), Path(__file__), {}
        if owners:
            uid, gid = owners[index]
            os.chown(home, uid, gid)
            home.chmod(0o700)
            kit = Path(args.staged["SMOLKIT_LOAD_KIT"])
            script = kit / "bench" / "workshop_load.py"
            env.update(args.staged, PYTHONPATH=env["PYTHONPATH"].replace(str(REPO), str(kit)),
                       TORCHINDUCTOR_CACHE_DIR=str(own_compile_cache(home, uid, gid, args)))  # fmt: skip
            who = {"user": uid, "group": gid, "extra_groups": []}
        cmd = [sys.executable, str(script), "--worker", "--index", str(index), *worker_args(args)]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            env=env, cwd=home, start_new_session=True, **who,
        )  # fmt: skip
        kernels.append(start_reader({"index": index, "proc": proc, "log": log, "log_path": log_path, "events": {},
                                     "share": env.get("SMOLKIT_GPU_MEMORY_FRACTION")}))
    return kernels


def start_reader(kernel: dict[str, Any]) -> dict[str, Any]:
    """Give ``kernel`` (a started process under "proc") a queue of its stdout lines, filled by a thread of its own."""
    kernel["lines"] = queue.Queue()
    threading.Thread(target=pump, args=(kernel["proc"].stdout, kernel["lines"]), daemon=True).start()
    return kernel


def own_compile_cache(home: Path, uid: int, gid: int, args: argparse.Namespace) -> Path:
    """An account's own compile cache, a copy of the one the first kernel filled (torch's compile cache takes
    locks and writes beside what it reads, so accounts cannot share one read-only; a copy per participant is what
    a hub would hand out)."""
    own = home / "inductor"
    if Path(args.compile_cache).is_dir() and not own.exists():
        shutil.copytree(args.compile_cache, own, ignore=shutil.ignore_patterns("*.lock"))
    for path in [own, *own.rglob("*")] if own.exists() else []:
        os.chown(path, uid, gid)
    return own


def pump(stream, lines: queue.Queue) -> None:
    """Queue every line of ``stream``, then None when it closes (the kernel exited)."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def worker_args(args: argparse.Namespace) -> list[str]:
    return [
        "--device", args.device, "--seconds", str(args.seconds), "--samples", str(args.samples),
        "--tokens", str(args.tokens), "--generate-every", str(args.generate_every), "--slider-hz", str(args.slider_hz),
        *(["--hold-on-error"] if args.overload else []),
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


def send(kernel: dict[str, Any], line: str) -> None:
    try:
        kernel["proc"].stdin.write(line + "\n")
        kernel["proc"].stdin.flush()
    except (BrokenPipeError, OSError):  # it died: its failure is read from its log
        pass


def stop_kernels(kernels: list[dict[str, Any]]) -> None:
    for kernel in kernels:
        proc = kernel["proc"]
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        kernel["log"].close()


def log_tail(path: Path, lines: int = 8) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def wait_ready(kernels: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Wait for every kernel's "ready" (all start together: one deadline); the failures, described."""
    deadline = time.monotonic() + args.startup_timeout
    failures = []
    for kernel in kernels:
        message = wait_event(kernel, "ready", max(0.1, deadline - time.monotonic()))
        if message is None or message["event"] == "error":
            kernel["failed"] = True
            failures.append(describe_failure(kernel, message, "warm-up"))
    return failures


def play_window(kernels: list[dict[str, Any]], args: argparse.Namespace) -> tuple[list[dict], list[str], float | None]:
    """Every ready kernel plays --seconds at once; their results, the failures, and the GPU memory in use (GB,
    nvidia-smi) in the middle of the window."""
    live = [k for k in kernels if not k.get("failed")]
    for kernel in live:
        send(kernel, "go")
    time.sleep(min(10.0, args.seconds / 2))
    used = gpu_used_gb()
    results, failures = [], []
    for kernel in live:
        message = wait_event(kernel, "result", args.seconds + args.generate_timeout)
        if message is None or message["event"] == "error":
            kernel["failed"] = True
            failures.append(describe_failure(kernel, message, "load"))
        else:
            results.append(message)
    return results, failures, used


def describe_failure(kernel, message, stage: str) -> str:
    if message is not None:
        return f"kernel {kernel['index']}, {message['stage']}: {message['type']}: {message['message'][:300]}"
    code = kernel["proc"].poll()
    why = f"exited with {code}" if code is not None else "gave no answer in time"
    return f"kernel {kernel['index']}, {stage}: {why}: {log_tail(kernel['log_path'])}"


def gpu_name() -> str | None:
    """The first GPU's name, from nvidia-smi (no CUDA context in this process); None without it."""
    return gpu_split.gpu_query("name") or None


def gpu_used_gb() -> float | None:
    """The GPU's memory in use (GB, the first GPU, every process), from nvidia-smi; None without it."""
    used = gpu_split.gpu_query("memory.used")  # MiB
    try:
        return float(used) * 2**20 / 1e9 if used else None
    except ValueError:
        return None


# -- figures --------------------------------------------------------------------------------------------------------


def p95(values: list[float]) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def summarise(n: int, kernels: list[dict[str, Any]], results: list[dict], failures: list[str], memory_gb: dict,
              args) -> dict[str, Any]:  # fmt: skip
    """One row: the figures of a window played by ``n`` kernels, and the first failure (a failure, or a p95 over
    its budget). ``memory_gb``: the GPU's use before the kernels started and in the middle of the window."""
    slider = [s for r in results for s in r["slider_s"]]
    generate = [s for r in results for s in r["generate_s"]]
    warmups = [k["events"]["ready"]["warmup_s"] for k in kernels if k["events"].get("ready")]
    allocated = [r["max_allocated_gb"] for r in results if r["max_allocated_gb"] is not None]
    reserved = [r.get("reserved_gb") for r in results if r.get("reserved_gb") is not None]
    before, under = memory_gb.get("before"), memory_gb.get("under_load")
    used = (under - before) / len(results) if results and None not in (before, under) else None
    row = {
        "n": n,
        "kernels_ok": len(results),
        "tiers": sorted({str(r.get("tier")) for r in results}),
        "slider_updates": len(slider),
        "slider_p50_ms": statistics.median(slider) * 1e3 if slider else None,
        "slider_p95_ms": p95(slider) * 1e3 if slider else None,
        "generates": len(generate),
        "generate_p50_s": statistics.median(generate) if generate else None,
        "generate_p95_s": p95(generate),
        "warmup_max_s": max(warmups) if warmups else None,
        "max_allocated_gb_per_kernel": max(allocated) if allocated else None,
        "reserved_gb_per_kernel": max(reserved) if reserved else None,
        # with its CUDA context: what the GPU's use grew by, shared out (nvidia-smi; None without it)
        "gpu_gb_per_kernel": used,
        # what a kernel holds outside torch's allocator (its context): the split's context (workshop/gpu_split.py)
        "context_gb_per_kernel": used - statistics.mean(reserved) if used is not None and reserved else None,
        "gpu_used_gb": under,
        "gpu_total_gb": results[0]["gpu_total_gb"] if results else None,
        "share": float(kernels[-1]["share"]) if kernels else None,  # the newest kernels: this N's
        "seats": args.seats or n,
        "failures": failures,
    }
    over = []
    if row["slider_p95_ms"] is not None and row["slider_p95_ms"] > args.slider_budget_ms:
        over.append(f"slider p95 {row['slider_p95_ms']:.1f} ms > {args.slider_budget_ms:g} ms")
    if row["generate_p95_s"] is not None and row["generate_p95_s"] > args.generate_budget_s:
        over.append(f"generate p95 {row['generate_p95_s']:.2f} s > {args.generate_budget_s:g} s")
    row["first_failure"] = (failures or over or [None])[0]
    return row


def outcome(kernel: dict[str, Any]) -> str:
    """What one kernel saw under overload: "worked", "kit" (smolkit's GpuShareExhausted or GpuUnavailable, or its
    refusal of a request that does not fit what is free, naming what would), "raw" (an out-of-memory or CUDA error
    in another form: what participants must never see) or "other"."""
    if ("result" in kernel["events"] or "ready" in kernel["events"]) and not kernel.get("failed"):
        return "worked"  # a late arrival that warmed up (model loaded, first generate done) counts: it plays no window
    error = kernel["events"].get("error")
    if error is not None:
        if error["type"] in ("GpuShareExhausted", "GpuUnavailable") or error["message"].startswith("GPU out of memory"):
            return "kit"
        if error["type"] == "ValueError" and "GiB available" in error["message"]:
            return "kit"  # generation.check_fits: the request does not fit what is free now, and what would
        text = f"{error['type']}: {error['message']}"
    else:
        text = log_tail(kernel["log_path"], 30)
    return "raw" if any(sign in text for sign in ("out of memory", "CUDA error", "CUBLAS_STATUS")) else "other"


def seen_by(kernels: list[dict[str, Any]], most: int = 6, kinds: tuple[str, ...] = ("raw", "other")) -> dict:
    """What the first ``most`` kernels whose ``outcome`` is one of ``kinds`` (default: the unexplained, that
    neither worked nor got the kit's message) saw: their error (its stage, and the GB their torch held then), else
    their log's tail. The row says why, not only how many."""
    seen = {}
    for kernel in kernels:
        if outcome(kernel) in kinds and len(seen) < most:
            error = kernel["events"].get("error")
            if error is not None:
                held = f" (held {error['reserved_gb']:.2f} GB)" if error.get("reserved_gb") is not None else ""
                seen[kernel["index"]] = f"{error['stage']}{held}: {error['type']}: {error['message'][:300]}"
            elif kernel["proc"].poll() is None:
                seen[kernel["index"]] = f"no answer, alive; its stack: {stack_of(kernel)}"
            else:
                seen[kernel["index"]] = f"no answer, exited {kernel['proc'].poll()}: {log_tail(kernel['log_path'], 4)}"
    return seen


def stack_of(kernel: dict[str, Any]) -> str:
    """Where a kernel that gives no answer is: its Python stack, which the worker's faulthandler writes into its log
    on SIGUSR1 (the last lines: the innermost frames come first, the thread waiting on the GPU among them)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(kernel["proc"].pid, signal.SIGUSR1)
    time.sleep(1.0)
    return log_tail(kernel["log_path"], 20)


def tally(outcomes) -> dict[str, int]:
    """How many kernels saw each ``outcome``, every kind named (0 where none)."""
    seen = list(outcomes)
    return {kind: seen.count(kind) for kind in ("worked", "kit", "raw", "other")}


def table(rows: list[dict[str, Any]]) -> str:
    def fmt(value, spec):
        return "-".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)

    lines = ["    N  variant           share  slider p95 ms  generate p50/p95 s  GPU GB/kernel  GPU used GB"
             "  warm-up s  first failure"]  # fmt: skip
    for r in rows:
        lines.append(
            f"{r['n']:>5}  {r.get('variant', '-'):<16}  {r['share']:.3f}  {fmt(r['slider_p95_ms'], '13.1f')}"
            f"  {fmt(r['generate_p50_s'], '8.2f')} /{fmt(r['generate_p95_s'], '8.2f')}"
            f"  {fmt(r['gpu_gb_per_kernel'] or r['max_allocated_gb_per_kernel'], '13.2f')}"
            f"  {fmt(r['gpu_used_gb'], '11.1f')}  {fmt(r['warmup_max_s'], '9.1f')}  {r['first_failure'] or 'none'}"
        )
    return "\n".join(lines)


# -- runs -----------------------------------------------------------------------------------------------------------


def run_n(n: int, variant: tuple[str, ...], args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Start n kernels under ``variant``, let them warm up, play one window together; the row (overload: with
    what every kernel saw, and the window played by those that came up)."""
    scratch = scratch / f"n{n}-{variant_name(variant)}"
    try:
        with remedy_env(variant, scratch) as remedy, accounts_for(variant, n, scratch) as owners:
            extra = {**hub_split(n, args, scratch), **remedy}  # once: newcomers get the same split
            before = gpu_used_gb()
            first = args.overload_after or n
            kernels = start_kernels(range(first), n, args, scratch, extra, owners)
            try:
                failures = wait_ready(kernels, args)
                if first < n:  # the rest arrive at a full GPU while the first ones play
                    return late_arrivals(kernels, range(first, n), n, args, scratch, extra, owners, variant)
                mps = mps_clients(extra) if "mps" in variant else None
                results, used = [], None
                if args.overload or not failures:
                    results, more, used = play_window(kernels, args)
                    failures += more
                row = summarise(n, kernels, results, failures, {"before": before, "under_load": used}, args)
                if mps is not None:
                    row["mps"] = mps
                    print(f"      MPS after warm-up: {mps}", flush=True)
                if args.overload:
                    seen = {k["index"]: outcome(k) for k in kernels}
                    row["outcomes"] = tally(seen.values())
                    row["per_kernel"] = seen
                    row["seen_otherwise"] = seen_by(kernels)
            finally:
                stop_kernels(kernels)
    except (MpsUnavailable, AccountsUnavailable) as err:
        row = summarise(n, [], [], [f"{type(err).__name__}: {err}"], {}, args)
    row["variant"] = variant_name(variant)
    return row


def late_arrivals(first: list[dict[str, Any]], late: range, n: int, args: argparse.Namespace, scratch: Path,
                  extra: dict[str, str], owners: list | None, variant: tuple[str, ...]) -> dict[str, Any]:  # fmt: skip
    """The kernels ``first`` (up) play a window while the kernels ``late`` start: what each group saw. The claim it
    checks: participants who arrive at a full GPU get the kit's message, and those already working keep working."""
    live = [k for k in first if not k.get("failed")]
    for kernel in live:
        send(kernel, "go")
    newcomers: list[dict[str, Any]] = []
    try:
        for index in late:  # at once (a burst: "everyone, open notebook 05"), or one every --arrive-every seconds
            newcomers += start_kernels(range(index, index + 1), n, args, scratch, extra, owners)
            time.sleep(args.arrive_every)
        wait_ready(newcomers, args)
        results = [wait_event(k, "result", args.seconds + args.generate_timeout) for k in live]
        for kernel, message in zip(live, results, strict=True):
            kernel["failed"] = message is None or message["event"] == "error"
        good = [m for m in results if m is not None and m["event"] != "error"]
        row = summarise(n, first, good, [], {"before": None, "under_load": gpu_used_gb()}, args)
        for name, group in (("first", first), ("late", newcomers)):
            row[f"outcomes_{name}"] = tally(outcome(k) for k in group)
        if "mps" in variant:
            row["mps"] = mps_clients(extra)
        row["seen_otherwise"] = seen_by(first + newcomers)
        row["seen_by_first"] = seen_by(first, most=8, kinds=("kit", "raw", "other"))  # those who were working
        row["seen_by_late"] = seen_by(newcomers, most=16, kinds=("kit",))  # which of the kit's messages
        row["first_reserved_gb"] = sorted(round(k["events"]["ready"]["reserved_gb"], 2) for k in first
                                          if k["events"].get("ready", {}).get("reserved_gb") is not None)  # fmt: skip
        row["late_warmup_s"] = sorted(round(k["events"]["ready"]["warmup_s"], 1) for k in newcomers
                                      if "ready" in k["events"])  # fmt: skip
        row["silent_after_others_left"] = after_others_leave(newcomers, args)
        row["variant"] = variant_name(variant)
        print(f"      overload after {len(first)}: first {row['outcomes_first']}, late {row['outcomes_late']}",
              flush=True)  # fmt: skip
        return row
    finally:
        stop_kernels(newcomers)


def after_others_leave(newcomers: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, int] | None:
    """Newcomers that gave no answer: do they go on once the newcomers that got the kit's message (and, as a
    participant's kernel does, kept what they hold) are shut down? How many then came up ("ready"), got a message
    (``outcome``) or stayed silent; None if none was silent."""
    silent = [k for k in newcomers if not k["events"] and k["proc"].poll() is None]
    if not silent:
        return None
    stop_kernels([k for k in newcomers if outcome(k) == "kit"])
    seen = {"ready": 0, "kit": 0, "raw": 0, "other": 0, "silent": 0}
    deadline = time.monotonic() + args.startup_timeout  # one for all, as in wait_ready
    for kernel in silent:
        answer = wait_event(kernel, "ready", max(0.1, deadline - time.monotonic()))
        seen["silent" if answer is None else "ready" if answer["event"] == "ready" else outcome(kernel)] += 1
    return seen


def ramp(ns: list[int], variant: tuple[str, ...], args: argparse.Namespace, scratch: Path):
    """Kernels added step by step up to each N of ``ns`` (those already up stay), one window per step: yields the
    row of each step. The capacity planner's loop (bench/capacity.py): it stops at the first N over budget."""
    scratch = scratch / f"ramp-{variant_name(variant)}"
    kernels: list[dict[str, Any]] = []
    with remedy_env(variant, scratch) as extra, accounts_for(variant, max(ns), scratch) as owners:
        before = gpu_used_gb()
        try:
            for n in ns:
                # the new kernels get the share a hub for n participants gives (those up keep theirs: a share only
                # matters to a kernel that would pass it, and every kernel runs the same script)
                split = {**hub_split(n, args, scratch), **extra}
                kernels += start_kernels(range(len(kernels), n), n, args, scratch, split, owners)
                failures = wait_ready([k for k in kernels if not (k["events"].get("ready") or k.get("failed"))], args)
                results, more, used = play_window(kernels, args) if not failures else ([], [], None)
                row = summarise(n, kernels, results, failures + more, {"before": before, "under_load": used}, args)
                row["variant"] = variant_name(variant)
                yield row
        finally:
            stop_kernels(kernels)


def warm_compile_cache(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """One kernel alone first: converts the embedded model if needed and fills the shared compile cache, so that
    N kernels starting at once neither race on the model cache nor all compile from nothing (as `workshop.sh
    prepare` converts the model once). Returns what that kernel said when ready (its GPU, its warm-up)."""
    started = time.perf_counter()
    one = argparse.Namespace(**{**vars(args), "seconds": 0.1, "overload": False})
    compiles = any("plain" not in v for v in args.variants)  # base compiles mid-session, compiled at warm-up
    warm = {**hub_split(1, one, scratch / "warm"), **(REMEDIES["compiled"] if compiles else {})}
    kernels = start_kernels(range(1), 1, one, scratch / "warm", warm)
    try:
        ready = wait_event(kernels[0], "ready", args.startup_timeout)
        if ready is None or ready["event"] == "error":
            raise SystemExit(f"the first kernel failed: {describe_failure(kernels[0], ready, 'warm-up')}")
    finally:
        stop_kernels(kernels)
    return {**ready, "elapsed_s": time.perf_counter() - started}


def warm_up(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """``warm_compile_cache``, then, when a variant runs kernels as accounts, what they must read staged for them."""
    warm = warm_compile_cache(args, scratch)
    if any("accounts" in v for v in args.variants) and os.geteuid() == 0:
        args.staged = stage_for_accounts(scratch)
    return warm


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Every N of --n, each under every variant of --variants (the same N side by side), within --minutes."""
    scratch = Path(tempfile.mkdtemp(prefix="smolkit-workshop-load-"))
    args.compile_cache = args.compile_cache or scratch / "inductor"
    started, rows, stop = time.perf_counter(), [], False
    try:
        warm = warm_up(args, scratch)
        print(f"first kernel alone (model cache checked, compile cache filled): {warm['elapsed_s']:.1f} s, "
              f"{warm['gpu'] or 'CPU'}", flush=True)  # fmt: skip
        for n in args.n:
            for variant in args.variants:
                if rows and time.perf_counter() - started + 1.5 * rows[-1]["elapsed_s"] > args.minutes * 60:
                    print(f"N={n} {variant_name(variant)}: skipped, the sweep would pass --minutes {args.minutes:g}",
                          flush=True)  # fmt: skip
                    stop = True
                    break
                t = time.perf_counter()
                row = run_n(n, variant, args, scratch)
                row["elapsed_s"] = time.perf_counter() - t
                rows.append(row)
                if args.out:  # after every row: a run cut short keeps what it measured
                    args.out.write_text(json.dumps({"partial": True, "rows": rows}, indent=2, default=str) + "\n")
                print(table([row]).splitlines()[-1], flush=True)
                if "outcomes" in row:
                    print(f"      overload, per kernel: {row['outcomes']}", flush=True)
            if stop or (rows and all(r["first_failure"] for r in rows[-len(args.variants):]) and not args.keep_going):
                break
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    keys = ("device", "seconds", "samples", "tokens", "generate_every", "slider_hz", "fraction", "seats", "context_gb",
            "n", "overload",
            "overload_after", "arrive_every", "startup_timeout")  # fmt: skip
    found = {k: getattr(args, k) for k in keys} | {"cpus": os.cpu_count(), "gpu": warm["gpu"], "torch": warm["torch"],
                                                    "variants": [variant_name(v) for v in args.variants]}  # fmt: skip
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
    p.add_argument("--seats", type=int, default=None,
                   help="split the GPU as a hub for this many participants does (default: N): seats and shares")
    p.add_argument("--context-gb", type=float, default=gpu_split.CONTEXT_GB,
                   help=f"a kernel's memory outside torch, for the split (default {gpu_split.CONTEXT_GB:g})")
    p.add_argument("--fraction", type=float, default=None, help="GPU share per kernel (default: the hub's split)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--slider-budget-ms", type=float, default=50)
    p.add_argument("--generate-budget-s", type=float, default=1.0)
    p.add_argument("--keep-going", action="store_true", help="run every N, also after something gave")
    p.add_argument("--minutes", type=float, default=9, help="stop before an N that would pass this (default 9)")
    p.add_argument("--startup-timeout", type=float, default=300, help="seconds for N kernels to warm up (300)")
    p.add_argument("--generate-timeout", type=float, default=120, help="seconds past --seconds to finish (120)")
    p.add_argument("--compile-cache", type=Path, default=None, help="shared TORCHINDUCTOR_CACHE_DIR (a temp dir)")
    p.add_argument("--variants", default="base",
                   help="remedies to compare at every N, comma-separated, each a '+'-joined set of: base (the hub\n"
                        "before issue 27: compiles mid-session), plain (SMOLKIT_COMPILE_AFTER_S=never), compiled (at\n"
                        "warm-up, SMOLKIT_COMPILE_AFTER_S=0), accounts (a system account per kernel), mps (NVIDIA\n"
                        "MPS daemon with private pipe/log dirs), lazy (CUDA_MODULE_LOADING=LAZY), threads1\n"
                        "(OMP_NUM_THREADS=1), conn1 (CUDA_DEVICE_MAX_CONNECTIONS=1); e.g. base,plain,plain+mps")
    for name in ("plain", "mps", "lazy"):
        p.add_argument(f"--{name}", action="store_true", help=f"add '{name}' to every variant")
    p.add_argument("--overload", action="store_true",
                   help="more kernels than fit: every N runs even past failures, kernels that failed keep what they\n"
                        "hold (as a participant's does), and each kernel's outcome is reported: worked, kit (the\n"
                        "kit's GpuShareExhausted or GpuUnavailable), raw (a raw CUDA error) or other; give --seats")
    p.add_argument("--overload-after", type=int, default=0,
                   help="with --overload: start this many kernels first, and the rest of N while those play\n"
                        "(participants who arrive at a full GPU): outcomes reported for each group apart")
    p.add_argument("--arrive-every", type=float, default=0.0,
                   help="with --overload-after: seconds between one newcomer's start and the next (default 0: at once)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--hold-on-error", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.n = [int(v) for v in str(args.n).split(",") if v.strip()]
    if not args.n or min(args.n) < 1:
        p.error(f"--n must list kernel counts >= 1, got {args.n}")
    try:
        variants = parse_variants(args.variants)
    except ValueError as err:
        p.error(str(err))
    extras = {name for name in ("plain", "mps", "lazy") if getattr(args, name)}
    args.variants = list(dict.fromkeys(tuple(sorted((set(v) - {"base"}) | extras)) or ("base",) for v in variants))
    if args.seats is not None and args.seats < 1:
        p.error(f"--seats must be 1 or more, got {args.seats}")
    if args.arrive_every < 0:
        p.error(f"--arrive-every must be 0 or more seconds, got {args.arrive_every}")
    if args.overload_after and not (args.overload and 0 < args.overload_after < min(args.n)):
        p.error(f"--overload-after needs --overload and 0 < it < every N, got {args.overload_after}")
    args.keep_going = args.keep_going or args.overload
    return args


def exit_on_sigterm() -> None:
    """`timeout` and a lent machine's limit send SIGTERM: exit through the finally blocks that stop the kernels
    (each runs in a session of its own, so nothing else would stop them and their GPU memory)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        return worker(args)
    exit_on_sigterm()
    results = sweep(args)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nworkshop load, {results['settings']['gpu'] or 'CPU'} ({results['settings']['cpus']} cores), "
          f"{args.samples} x {args.tokens} every {args.generate_every:g} s, sliders at {args.slider_hz:g} Hz, "
          f"{args.seconds:g} s per N, {results['total_s']:.0f} s in all:")  # fmt: skip
    print(table(results["rows"]))


if __name__ == "__main__":
    main()
