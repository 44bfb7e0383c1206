"""llama.cpp against the kit (issue 26): the build time of llama-cpp-python and how far apart the two engines'
next-token distributions are, split into the rules (order, penalty windows) and the arithmetic (Q4_1 vs float32).

    .venv/bin/python bench/bench_engines.py --out bench/results-engines.json

Needs llama-cpp-python (make test-engines). The build time is the one environment/llama_cpp.sh wrote beside the
cached wheel (build-seconds.txt), measured when it built.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import smolkit
from smolkit import llamacpp

PROMPTS = ("Write one word that describes the sea.", "The capital of France is", "Write a haiku about tea.")
PRESETS = {
    "T 1.3, top_k 40, top_p 0.9, min_p 0.05": smolkit.SamplingParams(temperature=1.3, top_k=40, top_p=0.9, min_p=0.05),
    "T 0.7, top_p 0.9": smolkit.SamplingParams(temperature=0.7, top_p=0.9),
    "T 1.0 (no cut-off)": smolkit.SamplingParams(temperature=1.0),
}


def build_seconds() -> str | None:
    """What environment/llama_cpp.sh recorded for the cached wheel's build, if anything."""
    found = sorted(Path.home().glob(".cache/smolkit/wheels/llama-cpp-python-*/build-seconds.txt"))
    return found[-1].read_text().strip() if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results-engines.json"))
    args = parser.parse_args()
    lm = smolkit.load_model()
    start = time.perf_counter()
    llm = llamacpp.load_llama()
    load_seconds = time.perf_counter() - start
    rows = []
    for prompt in PROMPTS:
        for name, params in PRESETS.items():
            distances = llamacpp.engine_distances(lm, prompt, params, llm=llm)
            rows.append({"prompt": prompt, "preset": name, **{k: round(v, 4) for k, v in distances.items()}})
            print(rows[-1])
    result = {
        "machine": f"{platform.node()}: {platform.processor() or platform.machine()}, {_cpu()}",
        "command": "python bench/bench_engines.py",
        "llama_cpp_python": "0.3.36 (portable build: AVX2/FMA/F16C, no AVX-512/AMX)",
        "build": build_seconds(),
        "gguf_load_seconds": round(load_seconds, 2),
        "engine": "llama-cpp-python",
        "distances": rows,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
