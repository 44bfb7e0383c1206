"""GPU benchmark (`make bench-gpu`): smolkit's fast path beside its peers, each measured in the same run.

Peers, all on the same model, prompt and machine:
  - plain ``model.generate()`` (dynamic cache),
  - transformers' fastest path, ``generate(..., cache_implementation="static")`` (compiles the forward; --static),
  - smolkit's ``generate()`` (decode + sampling captured in CUDA graphs, ``smolkit.fastpath``) in both tiers (the
    plain PyTorch pieces a decoder starts with, the compiled ones it moves to after COMPILE_AFTER_S of decoding)
    beside its own variant with static shapes (a compile per batch size and cache length).
Also the sampler alone per step (a CUDA graph of 32 steps; the fused Triton sampler once timed beside it lives in
bench/fused_sampler/). A fresh process's start, stage by stage, is bench/profile_startup.py's.

Prints a table and writes JSON (--out). Random weights of the same architecture give the same speed as real ones
(--weights random). ``--device cpu`` runs the same code paths eagerly on the CPU with a tiny model and few tokens
(a check that the script runs end to end, not a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import smolkit
from smolkit import SamplingParams, fastpath
from smolkit.models import LoadedModel, resolve_dtype

PROMPT = "Write a short story about a robot who learns to paint."
LONG_PROMPT = " ".join([PROMPT] * 24)  # ~300 tokens: another prompt bucket and cache length
DEVICE = torch.device("cuda")


@dataclasses.dataclass(frozen=True)
class Sizes:
    tokens: int  # new tokens at batch 1
    many: int  # rows of the many-samples case (and its tokens)
    middle: int  # the notebooks' middle batch size
    repeat: int  # timed repetitions


GPU_SIZES = Sizes(tokens=128, many=64, middle=8, repeat=5)
CPU_SIZES = Sizes(tokens=6, many=4, middle=2, repeat=1)
SIZES = GPU_SIZES


def base_params() -> SamplingParams:
    return SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=SIZES.tokens)


def full_params() -> SamplingParams:
    return base_params().replace(top_k=50, min_p=0.02, repetition_penalty=1.1, presence_penalty=0.3,
                                 frequency_penalty=0.2, min_tokens=min(8, SIZES.tokens),
                                 stop_token_ids=[30])  # fmt: skip


def sync() -> None:
    if DEVICE.type == "cuda":
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
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
"""The --device cpu stand-in: SmolLM2's vocabulary (its tokenizer), tiny layers."""

SIGLIP_B16_512 = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=512,
    patch_size=16,
)  # fmt: skip
"""SmolVLM-256M's vision encoder per its model card: SigLIP base-patch16-512; with pixel shuffle x4, 64 tokens/tile."""


def random_lm(kind: str, dtype: torch.dtype, device: torch.device | None = None) -> LoadedModel:
    """A model of SmolLM2-135M's (or SmolVLM-256M's) architecture with random weights, for speed only (on the CPU
    a tiny one); the tokenizer is the embedded model's (the prompts are text)."""
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        LlamaConfig,
        LlamaForCausalLM,
    )

    from smolkit.embedded import cache_problem, convert_embedded, embedded_cache_path

    device = device or DEVICE
    folder = os.environ.get("SMOLKIT_BENCH_TOKENIZER")  # a folder with tokenizer files, where no GGUF travelled
    if folder is None:
        if cache_problem(embedded_cache_path()) is not None:
            convert_embedded()
        folder = str(embedded_cache_path())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    text = {**SMOLLM2_135M, **(TINY if device.type == "cpu" else {})}
    with torch.device(device):
        if kind == "smollm2":
            model = LlamaForCausalLM(LlamaConfig(**text))
        else:
            config = Idefics3Config(text_config={**text, "vocab_size": 49280, "model_type": "llama"},
                                    vision_config=SIGLIP_B16_512, scale_factor=4, image_token_id=49190,
                                    tie_word_embeddings=True)  # fmt: skip
            model = Idefics3ForConditionalGeneration(config)
    model = model.to(dtype).eval()
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 2
    name = f"random-weights {kind}"
    return LoadedModel(model, tokenizer, None, device, name, dtype, name)


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


def smolkit_generate(lm: LoadedModel, params: SamplingParams, prompt: str = PROMPT) -> int:
    result = smolkit.generate(lm, prompt, params)
    return sum(len(s.token_ids) for s in result.samples)


@contextlib.contextmanager
def decoder_variant(lm: LoadedModel, **options: Any):
    """``lm``'s generate served by a FastDecoder built with ``options`` (compile=True, dynamic=False) meanwhile."""
    kept = fastpath.get_fast_decoder(lm)
    lm.fast_decoder = fastpath.FastDecoder(lm, **options)
    try:
        yield lm.fast_decoder
    finally:
        lm.fast_decoder = kept


@torch.inference_mode()
def sampler_step_us(decoder: fastpath.FastDecoder, batch: int, params: SamplingParams, steps: int = 32) -> float:
    """Microseconds one sampling step takes alone (on CUDA a graph of ``steps`` steps, replayed), from random
    logits, with ``params`` loaded and every row active."""
    buf = decoder.prepare(batch, 256)
    lm = decoder.lm
    params = params.replace(min_tokens=0, max_new_tokens=10_000, stop_token_ids=[])
    buf.settings.load(params, lm.eos_token_ids, lm.pad_token_id or 0)
    buf.progress.reset(lm.encode(PROMPT))
    logits = torch.randn(batch, decoder.model.vocab, device=decoder.device) * 3

    def run() -> None:
        for _ in range(steps):
            decoder._sample(logits, buf)

    run()  # compiles what needs compiling, outside the capture
    if DEVICE.type != "cuda":
        return timed(run, 1)[0] / steps * 1e6
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(10):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 10 / steps * 1000


TYPICAL = SamplingParams(temperature=0.8, top_p=0.9, top_k=50, min_p=0.02, repetition_penalty=1.1,
                         presence_penalty=0.3, frequency_penalty=0.2)  # fmt: skip
WIDE = SamplingParams(temperature=1.5, top_p=0.99)  # top_p keeps thousands of tokens
SAMPLER_CASES = {
    "full parameter set": TYPICAL,
    "temperature 1.5 top_p 0.99": WIDE,
    "greedy": SamplingParams(temperature=0),
}


class Table:
    """The rows printed and written to JSON."""

    def __init__(self, rows: list[dict], label: str):
        self.rows, self.label = rows, label

    def add(self, name: str, seconds: float, tokens: int = 0, note: str = "") -> None:
        rate = tokens / seconds if tokens and seconds else 0.0
        self.rows.append({"model": self.label, "what": name, "seconds": seconds, "tokens": tokens,
                          "tokens_per_s": rate, "note": note})  # fmt: skip
        print(f"{self.label:30} {name:66} {seconds:9.4f} s {rate:10.1f} tok/s {note}", flush=True)


def bench_samplers(lm: LoadedModel, table: Table) -> None:
    """The sampler alone per step (compiled), at the notebooks' batch sizes."""
    with decoder_variant(lm, compile=True) as shipped:
        for batch in (1, SIZES.many):
            for case, params in SAMPLER_CASES.items():
                us = sampler_step_us(shipped, batch, params)
                table.add(f"sampler alone (PyTorch), batch {batch}, {case}", us / 1e6, 0, f"{us:.1f} us/step")


def first_call(table: Table, lm: LoadedModel, name: str, params: SamplingParams, prompt: str = PROMPT) -> None:
    start = time.perf_counter()
    tokens = smolkit_generate(lm, params, prompt)
    sync()
    decoder = fastpath.get_fast_decoder(lm)
    table.add(name, time.perf_counter() - start, tokens, f"problems: {decoder.compile_problems or 'none'}")


def bench_smolkit(lm: LoadedModel, table: Table) -> None:
    """smolkit's fast path in each of its tiers (fastpath.COMPILE_AFTER_S): the plain pieces a decoder starts with,
    then the compiled ones it moves to."""
    for tier, compile in (("plain tier", False), ("compiled tier", True)):
        with decoder_variant(lm, compile=compile):
            bench_tier(lm, table, tier)


def bench_tier(lm: LoadedModel, table: Table, tier: str) -> None:
    """One tier: set-up, batch 1, the notebooks' batch sizes (first call and warm), a new prompt bucket."""
    long, many = full_params().replace(min_tokens=SIZES.tokens), full_params().replace(
        n=SIZES.many, max_new_tokens=SIZES.many, min_tokens=SIZES.many)  # fmt: skip
    middle = many.replace(n=SIZES.middle)
    base = base_params().replace(min_tokens=SIZES.tokens)
    name = f"smolkit ({tier})"
    start = time.perf_counter()
    decoder = fastpath.get_fast_decoder(lm)
    decoder.prepare(1, lm.encode(PROMPT).shape[1] + SIZES.tokens)
    table.add(f"{name}: set-up + capture, batch 1", time.perf_counter() - start, 0)
    print(f"  first calls (compile or cache load): {decoder.compile_seconds}; problems: {decoder.compile_problems}")
    smolkit_generate(lm, long)
    table.add(f"{name} generate, batch 1, full parameter set", *timed(lambda: smolkit_generate(lm, long), SIZES.repeat))
    table.add(f"{name} generate, batch 1, temperature 0.8 top_p 0.9",
              *timed(lambda: smolkit_generate(lm, base), SIZES.repeat))  # fmt: skip
    first_call(table, lm, f"{name}: first call at batch {SIZES.middle}", middle)
    table.add(f"{name} generate, {SIZES.middle} x {SIZES.many} tokens",
              *timed(lambda: smolkit_generate(lm, middle), SIZES.repeat))  # fmt: skip
    first_call(table, lm, f"{name}: first call at batch {SIZES.many}", many)
    table.add(f"{name} generate, {SIZES.many} continuations x {SIZES.many} tokens",
              *timed(lambda: smolkit_generate(lm, many), SIZES.repeat))  # fmt: skip
    first_call(table, lm, f"{name}: first call at a new prompt bucket (~300 tokens)", long, LONG_PROMPT)
    print(f"  set-up seconds: { {k: round(v, 2) for k, v in decoder.setup_seconds.items()} }", flush=True)


def bench_variants(lm: LoadedModel, table: Table) -> None:
    """smolkit's own peer: static shapes (compiled per batch size and cache length)."""
    long = full_params().replace(min_tokens=SIZES.tokens)
    many = full_params().replace(n=SIZES.many, max_new_tokens=SIZES.many, min_tokens=SIZES.many)
    label = "static shapes"
    with decoder_variant(lm, compile=True, dynamic=False):
        first_call(table, lm, f"smolkit ({label}): first call, batch 1 (compile + capture)", long)
        table.add(f"smolkit ({label}) generate, batch 1, full parameter set",
                  *timed(lambda: smolkit_generate(lm, long), SIZES.repeat))  # fmt: skip
        first_call(table, lm, f"smolkit ({label}): first call at batch {SIZES.many}", many)
        table.add(f"smolkit ({label}) generate, {SIZES.many} x {SIZES.many}",
                  *timed(lambda: smolkit_generate(lm, many), SIZES.repeat))  # fmt: skip


def bench_transformers(lm: LoadedModel, table: Table, static: bool, plain: bool) -> None:
    base, many = base_params(), base_params().replace(n=SIZES.many, max_new_tokens=SIZES.many)
    if plain:
        hf_generate(lm, base.replace(max_new_tokens=4), static=False)
        table.add("plain generate(), batch 1", *timed(lambda: hf_generate(lm, base, static=False), 1))
        table.add(f"plain generate(), {SIZES.many} x {SIZES.many}", *timed(lambda: hf_generate(lm, many, False), 1))
    if static:
        start = time.perf_counter()
        tokens = hf_generate(lm, base, static=True)
        table.add("static-cache generate, batch 1, first call (compiles)", time.perf_counter() - start, tokens)
        table.add("static-cache generate, batch 1, warm", *timed(lambda: hf_generate(lm, base, static=True), 3))
        start = time.perf_counter()
        tokens = hf_generate(lm, many, static=True)
        table.add(f"static-cache generate, {SIZES.many} x {SIZES.many}, first call (compiles)",
                  time.perf_counter() - start, tokens)  # fmt: skip
        table.add(f"static-cache generate, {SIZES.many} x {SIZES.many}, warm",
                  *timed(lambda: hf_generate(lm, many, static=True), 3))  # fmt: skip


def bench_model(lm: LoadedModel, rows: list[dict], static: bool, plain: bool, label: str, full: bool) -> None:
    """Everything for one model: smolkit as shipped; with ``full`` also the sampler alone and smolkit's variants;
    transformers' paths as asked."""
    table = Table(rows, label)
    bench_smolkit(lm, table)
    if full:
        bench_samplers(lm, table)
        bench_variants(lm, table)
    bench_transformers(lm, table, static, plain)


def load(weights: str, dtype: torch.dtype) -> LoadedModel:
    if weights == "embedded":
        return smolkit.load_model("embedded", device=DEVICE, dtype=dtype)
    return random_lm("smollm2", dtype)


def main() -> int:
    global DEVICE, SIZES
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", choices=["random", "embedded"], default="embedded")
    parser.add_argument("--static", action="store_true", help="also measure transformers' static-cache path (slow)")
    parser.add_argument("--no-plain", action="store_true", help="skip plain generate()")
    parser.add_argument("--vlm", action="store_true", help="also a SmolVLM-256M-shaped model (random weights)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--dtype", default="auto", help="the dtype measured in full (auto: load_model's default)")
    parser.add_argument("--compare-dtype", default=None, help="also the fast path alone in this dtype")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: the same code paths eagerly, a tiny model, few tokens (a dry run)")  # fmt: skip
    args = parser.parse_args()
    DEVICE = torch.device(args.device)
    SIZES = GPU_SIZES if DEVICE.type == "cuda" else CPU_SIZES
    weights = args.weights if DEVICE.type == "cuda" else "random"
    info = {
        "gpu": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "none (dry run on the CPU)",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "smolkit": smolkit.__version__,
        "command": " ".join(sys.argv),
    }
    print(json.dumps(info), flush=True)
    rows: list[dict] = []
    result: dict[str, Any] = {"info": info, "rows": rows}
    started = time.perf_counter()
    dtype = resolve_dtype(args.dtype, DEVICE)
    start = time.perf_counter()
    lm = load(weights, dtype)
    result["load_model_s"] = time.perf_counter() - start
    print(f"load_model in this process: {result['load_model_s']:.2f} s", flush=True)
    label = f"SmolLM2-135M ({weights}) {str(dtype).removeprefix('torch.')}"
    bench_model(lm, rows, args.static, not args.no_plain, label, full=True)
    if args.compare_dtype:
        other = resolve_dtype(args.compare_dtype, DEVICE)
        bench_model(load(weights, other), rows, False, False, f"SmolLM2-135M ({weights}) {args.compare_dtype}",
                    full=False)  # fmt: skip
    if args.vlm:
        vlm = random_lm("smolvlm", dtype)
        bench_model(vlm, rows, False, not args.no_plain, "SmolVLM-256M shape (random)", full=False)
    result["bench_seconds"] = time.perf_counter() - started
    print(f"bench: {result['bench_seconds']:.0f} s in all", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
