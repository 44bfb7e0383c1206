"""CPU benchmark (`make bench`): slider updates, model loads, many samples, the notebook suite.

Every figure is measured in this run beside its baseline:
  1. slider update: DistributionExplorer.update (re-warp cached logits + redraw) vs the naive way (run the model
     again for every change), p50 / p95 over many updates;
  2. model load: embedded model cold (GGUF de-quantization into an empty cache) vs warm (the converted cache), each
     in a fresh process, and a second load inside one process;
  3. many samples: n continuations in one batched generate() vs a Python loop of single generations;
  4. (--notebooks) the CPU nbval run of every notebook, as `make test-notebooks` runs it.
Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import smolkit
from smolkit import SamplingParams
from smolkit.widgets import DistributionExplorer

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a short story about a dragon."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def slider_updates(lm, updates: int, naive_updates: int, view: str) -> dict:
    """Time explorer updates with random slider values; the naive way also clears the logits cache each time."""
    rng = random.Random(0)
    explorer = DistributionExplorer(lm, PROMPT, controls=("temperature", "top_p", "top_k"), view=view)

    def change() -> dict:
        return {
            "temperature": round(rng.uniform(0.05, 2.0), 2),
            "top_p": round(rng.uniform(0.1, 1.0), 2),
            "top_k": rng.choice([-1, 5, 20, 50]),
        }

    times = []
    for _ in range(updates):
        start = time.perf_counter()
        explorer.update(**change())
        times.append(time.perf_counter() - start)
    naive = []
    for _ in range(naive_updates):
        start = time.perf_counter()
        lm.clear_cache()  # what a kit without cached logits does: a forward pass per change
        explorer.dist = smolkit.next_token_distribution(lm, PROMPT, explorer.params)
        explorer.update(**change())
        naive.append(time.perf_counter() - start)
    return {
        "view": view,
        "updates": updates,
        "p50_ms": 1000 * statistics.median(times),
        "p95_ms": 1000 * percentile(times, 95),
        "naive_updates": naive_updates,
        "naive_p50_ms": 1000 * statistics.median(naive),
        "naive_p95_ms": 1000 * percentile(naive, 95),
        "speedup_p50": statistics.median(naive) / statistics.median(times),
    }


LOAD_SNIPPET = """
import time, json, smolkit
start = time.perf_counter()
lm = smolkit.load_model(device="cpu")
first = time.perf_counter() - start
start = time.perf_counter()
smolkit.load_model(device="cpu")
second = time.perf_counter() - start
print("LOAD", json.dumps({"first_load_s": first, "second_load_s": second}))
"""


def fresh_load(cache: str) -> dict:
    env = {**os.environ, "SMOLKIT_CACHE_DIR": cache}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", LOAD_SNIPPET], capture_output=True, text=True, env=env, timeout=900)
    wall = time.perf_counter() - start
    line = [x for x in proc.stdout.splitlines() if x.startswith("LOAD ")]
    if proc.returncode or not line:
        raise RuntimeError(f"load process failed: {proc.stderr[-3000:]}")
    return {**json.loads(line[0][5:]), "process_wall_s": wall}


def model_loads() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        cold = fresh_load(cache)  # empty cache: converts the GGUF first
        warm = [fresh_load(cache) for _ in range(3)]
    return {
        "cold_first_load_s": cold["first_load_s"],
        "warm_first_load_s": statistics.median(w["first_load_s"] for w in warm),
        "warm_second_load_s": statistics.median(w["second_load_s"] for w in warm),
        "warm_process_wall_s": statistics.median(w["process_wall_s"] for w in warm),
    }


def many_samples(lm, n: int, tokens: int) -> dict:
    params = SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=tokens, min_tokens=tokens, seed=0)
    smolkit.generate(lm, PROMPT, params.replace(max_new_tokens=2, min_tokens=0))
    start = time.perf_counter()
    batched = smolkit.generate(lm, PROMPT, params.replace(n=n))
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n):
        smolkit.generate(lm, PROMPT, params.replace(seed=i))
    loop_s = time.perf_counter() - start
    made = sum(len(s.token_ids) for s in batched.samples)
    return {"n": n, "tokens": tokens, "batched_s": batched_s, "loop_s": loop_s, "speedup": loop_s / batched_s,
            "batched_tokens_per_s": made / batched_s}  # fmt: skip


def notebook_suite() -> dict:
    start = time.perf_counter()
    proc = subprocess.run(["make", "-s", "test-notebooks"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    summary = [x for x in proc.stdout.splitlines() if "passed" in x or "failed" in x]
    return {"wall_s": wall, "returncode": proc.returncode, "summary": summary[-1] if summary else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--notebooks", action="store_true", help="also time the CPU nbval run of every notebook")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "threads": torch.get_num_threads(),
        "command": " ".join(sys.argv),
    }
    print(json.dumps(info), flush=True)
    result: dict = {"info": info}
    lm = smolkit.load_model(device="cpu")
    for view in ("bars", "both"):
        row = slider_updates(lm, args.updates, 20, view)
        result[f"slider_{view}"] = row
        print(f"slider update ({view}): p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms over {row['updates']};"
              f" naive p50 {row['naive_p50_ms']:.1f} ms, p95 {row['naive_p95_ms']:.1f} ms;"
              f" {row['speedup_p50']:.1f}x", flush=True)  # fmt: skip
    result["load"] = model_loads()
    print("model load:", {k: round(v, 2) for k, v in result["load"].items()}, flush=True)
    result["many_samples"] = many_samples(lm, 16, 32)
    row = result["many_samples"]
    print(f"{row['n']} samples x {row['tokens']} tokens: batched {row['batched_s']:.2f} s, loop {row['loop_s']:.2f} s,"
          f" {row['speedup']:.1f}x", flush=True)  # fmt: skip
    if args.notebooks:
        result["notebooks"] = notebook_suite()
        print("notebook suite (CPU nbval):", result["notebooks"], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
