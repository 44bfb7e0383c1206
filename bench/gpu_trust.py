"""Is what the kit plots what it samples, on a GPU, per dtype? The measurements behind README's "equal on a GPU".

For float32 (the default) in both of the fast path's tiers (the plain PyTorch pieces a decoder starts with and the
compiled ones it moves to) and for bfloat16 (compiled), on the embedded model and the issue's prompt:
  - chi-square of 32,768 first tokens drawn by the fast path (64 calls of n=512, seeds 0-63) against
    ``next_token_distribution``'s probabilities, for three parameter sets (20 bins + "all others", 20 degrees of
    freedom: 45.3 is the p = 0.001 critical value), and the draws of tokens the plot shows as cut;
  - the largest difference between the probabilities the fast path drew from at each of 24 steps and
    ``next_token_distribution`` for the same prefix;
  - the largest difference between plain transformers' next-token probabilities in this dtype and in float32 (how
    far a bfloat16 forward drifts from the float32 model), and the first token where greedy fast-path and plain
    ``generate()`` part within 64 tokens.

    python bench/gpu_trust.py [--out bench/results-gpu-trust.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import smolkit
from smolkit import SamplingParams, generate, next_token_distribution
from smolkit.fastpath import FastDecoder, get_fast_decoder
from smolkit.testing import chi_square

PROMPT = "Write a short story about a robot who learns to paint."
SETS = {
    "temperature 1.0": SamplingParams(temperature=1.0),
    "temperature 1.3, top_p 0.95": SamplingParams(temperature=1.3, top_p=0.95),
    "temperature 0.8, top_k 40, min_p 0.02, repetition 1.1": SamplingParams(
        temperature=0.8, top_k=40, min_p=0.02, repetition_penalty=1.1
    ),
}
CALLS, PER_CALL = 64, 512
VARIANTS = {"float32, plain tier": ("float32", False), "float32, compiled tier": ("float32", True),
            "bfloat16, compiled tier": ("bfloat16", True)}  # fmt: skip


def draws_against_plot(lm, params: SamplingParams) -> dict:
    shown = next_token_distribution(lm, PROMPT, params).probs
    counts = torch.zeros_like(shown)
    for seed in range(CALLS):
        result = generate(lm, PROMPT, params.replace(max_new_tokens=1, n=PER_CALL, seed=seed))
        counts += torch.bincount(torch.tensor([s.token_ids[0] for s in result.samples]), minlength=shown.numel())
    top = torch.topk(shown, 3).indices
    return {
        "chi2_20dof": round(chi_square(counts, shown), 1),
        "draws_outside_plot": int(counts[shown == 0].sum()),
        "top3_plotted": [round(float(shown[i]), 4) for i in top],
        "top3_sampled": [round(float(counts[i] / counts.sum()), 4) for i in top],
    }


def step_parity(lm) -> float:
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=40, repetition_penalty=1.2, max_new_tokens=24, seed=3)
    out = get_fast_decoder(lm).generate(lm.inputs(PROMPT), params, lm.eos_token_ids, lm.pad_token_id, True)
    worst = 0.0
    for t in range(24):
        dist = next_token_distribution(lm, PROMPT, params, generated=out.tokens[0][:t])
        worst = max(worst, float((out.full_probs[0, t] - dist.probs).abs().max()))
    return worst


def greedy_parts_at(lm) -> int | None:
    params = SamplingParams(temperature=0, max_new_tokens=64)
    fast, plain = generate(lm, PROMPT, params).token_ids, generate(lm, PROMPT, params, fast=False).token_ids
    return next((i for i, (a, b) in enumerate(zip(fast, plain, strict=False)) if a != b), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    reference = smolkit.load_model("embedded", device="cuda", dtype="float32")
    ref_probs = next_token_distribution(reference, PROMPT).stages["raw"]
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "transformers": __import__("transformers").__version__, "variants": {}}  # fmt: skip
    for name, (dtype, compile) in VARIANTS.items():
        lm = reference if dtype == "float32" else smolkit.load_model("embedded", device="cuda", dtype=dtype)
        lm.fast_decoder = FastDecoder(lm, compile=compile)
        raw = next_token_distribution(lm, PROMPT).stages["raw"]
        row = {
            "draws": {case: draws_against_plot(lm, params) for case, params in SETS.items()},
            "max_step_prob_difference": step_parity(lm),
            "plain_forward_vs_float32_max_prob_difference": float((raw - ref_probs).abs().max()),
            "greedy_fast_vs_plain_first_difference": greedy_parts_at(lm),
        }
        report["variants"][name] = row
        print(name, json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
