"""How far other CPU kernels and the test suite's float noise move the next-token distribution, on this machine.

The notebooks' regression check plants noise (tests/float_noise.py: every Linear output times 1 + 1e-6 * r) instead
of sampling processors. This measures whether that noise is at least as large as what real kernel differences do:
each variation runs in a fresh process (the kernel choice is made at start-up), computes the next-token logits of a
few prompts with the embedded model, and is compared with the default run: the largest logit difference and the
largest relative difference of probabilities above 1e-4 (the ones a notebook prints).

    python bench/noise_scale.py --out bench/results-noise-scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ("Write a short poem about the sea.", "What is the capital of France?", "Once upon a time")
VARIATIONS = {
    "default, 2 threads": {"OMP_NUM_THREADS": "2"},
    "default, 1 thread": {"OMP_NUM_THREADS": "1"},
    "AVX2 kernels, 1 thread": {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"},
    "MKL reproducible path": {"MKL_CBWR": "AUTO", "OMP_NUM_THREADS": "2"},
    "float noise, seed 1": {"OMP_NUM_THREADS": "2", "NOISE_SEED": "1"},
    "float noise, seed 2": {"OMP_NUM_THREADS": "2", "NOISE_SEED": "2"},
}
CHILD = """
import os, sys, torch, smolkit
if os.environ.get("NOISE_SEED"):
    from tests import float_noise
    float_noise.install(int(os.environ["NOISE_SEED"]))
lm = smolkit.load_model(device="cpu")
logits = torch.stack([smolkit.next_token_distribution(lm, p).logits for p in PROMPTS])
torch.save(logits, sys.argv[1])
"""


def logits_under(env: dict[str, str], path: Path) -> torch.Tensor:
    """The prompts' next-token logits computed in a fresh process with ``env`` added."""
    code = f"PROMPTS = {PROMPTS!r}\n{CHILD}"
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, env={**os.environ, **env}, check=True)
    return torch.load(path)


def difference(base: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """The largest logit difference and the largest relative difference of probabilities above 1e-4."""
    p, q = torch.softmax(base.double(), -1), torch.softmax(other.double(), -1)
    shown = p > 1e-4
    return {"max_logit_diff": float((base - other).abs().max()),
            "max_rel_prob_diff": float(((p - q).abs() / p)[shown].max())}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        runs = {name: logits_under(env, Path(folder) / f"{i}.pt") for i, (name, env) in enumerate(VARIATIONS.items())}
    base = runs.pop("default, 2 threads")
    rows = {name: difference(base, logits) for name, logits in runs.items()}
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    for name, row in rows.items():
        print(f"{name:26s} logits {row['max_logit_diff']:.1e}   probabilities > 1e-4: {row['max_rel_prob_diff']:.1e}")
    if args.out:
        args.out.write_text(json.dumps({"machine": cpu, "torch": torch.__version__, "prompts": PROMPTS,
                                        "against": "default, 2 threads", "rows": rows}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
