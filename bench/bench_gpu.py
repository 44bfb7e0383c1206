"""GPU benchmark (`make bench-gpu`): smolkit's fast path beside transformers' own paths, measured in one run.

Peers, all on the same model, prompt and machine:
  - plain ``model.generate()`` (dynamic cache),
  - transformers' fastest path, ``generate(..., cache_implementation="static")`` (compiles the forward),
  - smolkit's ``generate()`` (decode + sampling captured in CUDA graphs, ``smolkit.fastpath``).
Sampling as in the issue: temperature 0.8, top_p 0.9; smolkit also with the full parameter set.

Prints a table and writes JSON (--out). Random weights of the same architecture give the same speed as real ones
(--weights random); --weights embedded uses the real SmolLM2-135M-Instruct when the embedded model is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import smolkit
from smolkit import SamplingParams, fastpath
from smolkit.models import LoadedModel

PROMPT = "Write a short story about a robot who learns to paint."
TOKENS = 128
BASE = SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=TOKENS)
FULL = BASE.replace(
    top_k=50, min_p=0.02, repetition_penalty=1.1, presence_penalty=0.3, frequency_penalty=0.2, min_tokens=8,
    stop_token_ids=[30],
)  # fmt: skip


def sync() -> None:
    torch.cuda.synchronize()


def timed(fn, repeat: int = 3) -> tuple[float, Any]:
    """Median seconds of ``repeat`` calls (after the caller's warm-up) and the last result."""
    times, result = [], None
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


SMOLLM2_135M = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
    tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
)  # fmt: skip
"""SmolLM2-135M-Instruct's architecture (as in the embedded model's config.json)."""

SIGLIP_B16_512 = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=512,
    patch_size=16,
)  # fmt: skip
"""SmolVLM-256M's vision encoder per its model card: SigLIP base-patch16-512; with pixel shuffle x4, 64 tokens/tile."""


def random_lm(kind: str, dtype: torch.dtype) -> LoadedModel:
    """A model of SmolLM2-135M's (or SmolVLM-256M's) architecture with random weights, for speed only; the
    tokenizer is the embedded model's (the prompts are text)."""
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        LlamaConfig,
        LlamaForCausalLM,
    )

    from smolkit.embedded import cache_problem, convert_embedded, embedded_cache_path

    folder = os.environ.get("SMOLKIT_BENCH_TOKENIZER")  # a folder with tokenizer files, where no GGUF travelled
    if folder is None:
        if cache_problem(embedded_cache_path()) is not None:
            convert_embedded()
        folder = str(embedded_cache_path())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    with torch.device("cuda"):
        if kind == "smollm2":
            model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
        else:
            text = {**SMOLLM2_135M, "vocab_size": 49280, "model_type": "llama"}
            config = Idefics3Config(text_config=text, vision_config=SIGLIP_B16_512, scale_factor=4,
                                    image_token_id=49190, tie_word_embeddings=True)  # fmt: skip
            model = Idefics3ForConditionalGeneration(config)
    model = model.to(dtype).eval()
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 2
    name = f"random-weights {kind}"
    return LoadedModel(model, tokenizer, None, torch.device("cuda"), name, dtype, name)


def hf_generate(lm: LoadedModel, params: SamplingParams, static: bool) -> int:
    """transformers' own generate with the same sampling; returns the number of new tokens."""
    inputs = lm.inputs(PROMPT)
    batch = {k: v.repeat(params.n, 1) for k, v in inputs.items()}
    extra = {"cache_implementation": "static"} if static else {}
    out = lm.model.generate(
        **batch, do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0,
        max_new_tokens=params.max_new_tokens, min_new_tokens=params.max_new_tokens, **extra,
    )  # fmt: skip
    return (out.shape[1] - batch["input_ids"].shape[1]) * params.n


def smolkit_generate(lm: LoadedModel, params: SamplingParams) -> int:
    result = smolkit.generate(lm, PROMPT, params)
    return sum(len(s.token_ids) for s in result.samples)


def bench_model(lm: LoadedModel, rows: list[dict], static: bool, plain: bool, label: str) -> None:
    def add(name: str, seconds: float, tokens: int, note: str = "") -> None:
        rows.append({"model": label, "what": name, "seconds": seconds, "tokens": tokens,
                     "tokens_per_s": tokens / seconds, "note": note})  # fmt: skip
        print(f"{label:28} {name:58} {seconds:8.3f} s {tokens / seconds:10.1f} tok/s {note}", flush=True)

    long = FULL.replace(min_tokens=TOKENS)  # all rows run the full length: same work as the peers
    many = FULL.replace(n=64, max_new_tokens=64, min_tokens=64)
    # smolkit fast path: set-up (compile + capture) first, then warm timings
    start = time.perf_counter()
    decoder = fastpath.get_fast_decoder(lm)
    decoder.prepare(1, lm.encode(PROMPT).shape[1] + TOKENS)
    add("smolkit fast path: compile + capture, batch 1", time.perf_counter() - start, 0)
    print(f"  first calls (compile or cache load): {decoder.compile_seconds}; problems: {decoder.compile_problems}")
    smolkit_generate(lm, long)
    seconds, tokens = timed(lambda: smolkit_generate(lm, long), 5)
    add("smolkit generate, batch 1, full parameter set", seconds, tokens)
    seconds, tokens = timed(lambda: smolkit_generate(lm, BASE.replace(min_tokens=TOKENS)), 5)
    add("smolkit generate, batch 1, temperature 0.8 top_p 0.9", seconds, tokens)
    start = time.perf_counter()
    smolkit_generate(lm, many)
    add("smolkit fast path: first 64x64 call (compile + capture)", time.perf_counter() - start, 64 * 64)
    seconds, tokens = timed(lambda: smolkit_generate(lm, many), 5)
    add("smolkit generate, 64 continuations x 64 tokens", seconds, tokens)
    if plain:
        hf_generate(lm, BASE.replace(max_new_tokens=8), static=False)
        seconds, tokens = timed(lambda: hf_generate(lm, BASE, static=False), 1)
        add("plain generate(), batch 1", seconds, tokens)
        seconds, tokens = timed(lambda: hf_generate(lm, BASE.replace(n=64, max_new_tokens=64), static=False), 1)
        add("plain generate(), 64 x 64", seconds, tokens)
    if static:
        start = time.perf_counter()
        tokens = hf_generate(lm, BASE, static=True)
        add("static-cache generate, batch 1, first call (compiles)", time.perf_counter() - start, tokens)
        seconds, tokens = timed(lambda: hf_generate(lm, BASE, static=True), 3)
        add("static-cache generate, batch 1, warm", seconds, tokens)
        start = time.perf_counter()
        tokens = hf_generate(lm, BASE.replace(n=64, max_new_tokens=64), static=True)
        add("static-cache generate, 64 x 64, first call (compiles)", time.perf_counter() - start, tokens)
        seconds, tokens = timed(lambda: hf_generate(lm, BASE.replace(n=64, max_new_tokens=64), static=True), 3)
        add("static-cache generate, 64 x 64, warm", seconds, tokens)


WARMUP_SNIPPET = """
import time, sys
import smolkit
start = time.perf_counter()  # the goal: from load_model() to the first sampled token
lm = smolkit.load_model(sys.argv[1], device="cuda") if sys.argv[1] == "embedded" else None
if lm is None:
    import bench_gpu  # run with the bench folder as the working directory
    lm = bench_gpu.random_lm("smollm2", __import__("torch").bfloat16)
loaded = time.perf_counter()
result = smolkit.generate(lm, "Hello!", smolkit.SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=2))
first = time.perf_counter()
print(f"WARMUP load={loaded - start:.2f} first_token={first - start:.2f} backend={result.backend}")
"""


def warmup_in_fresh_process(weights: str, cache: str) -> dict[str, float]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    proc = subprocess.run(
        [sys.executable, "-c", WARMUP_SNIPPET, weights],
        capture_output=True, text=True, env=env, timeout=600, cwd=Path(__file__).parent,
    )  # fmt: skip
    line = [x for x in proc.stdout.splitlines() if x.startswith("WARMUP")]
    if proc.returncode or not line:
        raise RuntimeError(f"warm-up process failed: {proc.stdout[-2000:]} {proc.stderr[-4000:]}")
    fields = line[0].split(maxsplit=3)[1:]  # load=.. first_token=.. backend=... (the backend has spaces)
    parts = dict(f.split("=", 1) for f in fields)
    return {"load_s": float(parts["load"]), "first_token_s": float(parts["first_token"]), "backend": parts["backend"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", choices=["random", "embedded"], default="embedded")
    parser.add_argument("--static", action="store_true", help="also measure transformers' static-cache path (slow)")
    parser.add_argument("--no-plain", action="store_true", help="skip plain generate()")
    parser.add_argument("--vlm", action="store_true", help="also a SmolVLM-256M-shaped model (random weights)")
    parser.add_argument("--warmup", action="store_true", help="time load_model -> first token in fresh processes")
    parser.add_argument("--out", default=None)
    parser.add_argument("--only-warmup", action="store_true", help="just the fresh-process warm-up timings")
    args = parser.parse_args()
    info = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "smolkit": smolkit.__version__,
        "command": " ".join(sys.argv),
    }
    print(json.dumps(info), flush=True)
    rows: list[dict] = []
    result: dict[str, Any] = {"info": info, "rows": rows}
    if args.warmup:
        with tempfile.TemporaryDirectory() as cache:
            result["warmup_cold_cache"] = warmup_in_fresh_process(args.weights, cache)
            print("warm-up, empty compile cache:", result["warmup_cold_cache"], flush=True)
            result["warmup_warm_cache"] = warmup_in_fresh_process(args.weights, cache)
            print("warm-up, compile cache from the run before:", result["warmup_warm_cache"], flush=True)
    if args.only_warmup:
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
        return 0
    if args.weights == "embedded":
        lm = smolkit.load_model("embedded", device="cuda")
    else:
        lm = random_lm("smollm2", torch.bfloat16)
    bench_model(lm, rows, args.static, not args.no_plain, f"SmolLM2-135M ({args.weights}) bf16")
    if args.vlm:
        vlm = random_lm("smolvlm", torch.bfloat16)
        bench_model(vlm, rows, False, not args.no_plain, "SmolVLM-256M shape (random) bf16")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
