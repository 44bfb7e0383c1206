"""Where a fresh process spends its time before the first token (issue 15, goals 1 and 5): each stage timed on its
own, in new processes, with an empty compile cache and then a warm one, the fast path in either tier (plain: the
PyTorch pieces a decoder starts with; compiled: the tier it moves to).

    python bench/profile_startup.py [--device cuda] [--weights embedded|random] [--out FILE]

Stages, in the order a notebook's first cells meet them: ``import torch``; ``import smolkit``; the CUDA context;
the transformers modules ``load_model`` imports; ``load_model()`` itself (the modules already imported); the first
``next_token_distribution`` (a plain transformers forward); the first ``generate`` (the fast path's compile or
compile-cache load, and its graph captures), a second one, the first and second call at 8 x 64, the first at
64 x 64 and at a new prompt bucket, and ``load_model()`` once more in the same process. For the
compiled variants, dynamo's own account of its time (``torch._dynamo.utils.compile_times``) is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

STAGES = """
import json, sys, time
marks = {}
last = time.perf_counter()
def mark(name):
    global last
    now = time.perf_counter()
    marks[name] = round(now - last, 3)
    last = now
import torch
mark("import torch")
import smolkit
mark("import smolkit")
device, weights, compiled = torch.device(sys.argv[1]), sys.argv[2], sys.argv[3] == "compiled"  # or "plain"
if device.type == "cuda":
    torch.empty(1, device=device)
mark("CUDA context")
import transformers
from transformers import AutoTokenizer, LlamaForCausalLM  # what load_model imports (lazily, on first use)
mark("import transformers (Llama, tokenizer)")
if weights == "embedded":
    lm = smolkit.load_model("embedded", device=device)
else:
    sys.path.insert(0, "bench")
    import bench_gpu
    lm = bench_gpu.random_lm("smollm2", torch.float32, device)
mark("load_model()")
smolkit.next_token_distribution(lm, "Hello!")
mark("first next_token_distribution")
from smolkit import fastpath
if device.type == "cuda":
    lm.fast_decoder = fastpath.FastDecoder(lm, compile=compiled)
params = smolkit.SamplingParams(temperature=0.8, top_p=0.9, top_k=50, max_new_tokens=2)
smolkit.generate(lm, "Hello!", params)
mark("first generate (batch 1, 2 tokens)")
smolkit.generate(lm, "Hello!", params.replace(max_new_tokens=128, min_tokens=128))
mark("next generate (batch 1, 128 tokens)")
smolkit.generate(lm, "Hello!", params.replace(n=8, max_new_tokens=64, min_tokens=64))
mark("first generate 8 x 64")
smolkit.generate(lm, "Hello!", params.replace(n=8, max_new_tokens=64, min_tokens=64))
mark("next generate 8 x 64")
smolkit.generate(lm, "Hello!", params.replace(n=64, max_new_tokens=64, min_tokens=64))
mark("first generate 64 x 64")
smolkit.generate(lm, " ".join(["Write a short story about a robot."] * 40), params)
mark("first generate at a new prompt bucket (~300 tokens)")
if weights == "embedded":
    smolkit.load_model("embedded", device=device)
    mark("load_model() again, in the same process")
if compiled and device.type == "cuda":
    from torch._dynamo.utils import compile_times
    print(compile_times(repr="str"), file=sys.stderr)
print("STAGES " + json.dumps(marks))
"""


def run(device: str, weights: str, variant: str, cache: str) -> dict[str, float]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", STAGES, device, weights, variant], capture_output=True, text=True,
                          env=env, cwd=root, timeout=600)  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if x.startswith("STAGES ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"stage process failed: {proc.stdout[-2000:]} {proc.stderr[-4000:]}")
    if variant == "compiled":
        print(proc.stderr[-3000:], flush=True)
    return json.loads(lines[0].removeprefix("STAGES "))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--weights", default="embedded", choices=["embedded", "random"])
    parser.add_argument("--variants", default="plain,compiled", help="the tiers: plain and/or compiled")
    parser.add_argument("--out")
    args = parser.parse_args()
    results = {}
    for variant in args.variants.split(","):
        with tempfile.TemporaryDirectory() as cache:
            for state in ("empty compile cache", "warm compile cache"):
                stages = run(args.device, args.weights, variant, cache)
                key = f"{variant}, {state}"
                results[key] = {**stages, "total": round(sum(stages.values()), 3)}
                print(key, json.dumps(results[key]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
