"""Where a fast-path decode step spends its time on a GPU: one CUDA-graph chunk, the sampler alone, one decoder
layer, the prompt pass, the host's post-processing, and the profiler's kernel table for one chunk.

    python bench/profile_fastpath.py [--batch 1] [--dtype auto] [--random] [--quick] [--device cpu]

``--device cpu`` runs the same code eagerly with a tiny random model (a check that the script runs, not a
measurement).
"""

from __future__ import annotations

import argparse
import time

import bench_gpu  # this script's folder is on sys.path
import torch

import smolkit
from smolkit import SamplingParams
from smolkit.fastpath import FastDecoder
from smolkit.fastpath.decoder import CHUNK
from smolkit.fastpath.layers import SMALL_BATCH

PROMPT = "Write a short story about a robot who learns to paint."


def device_ms(fn, repeat: int = 20) -> float:
    """Milliseconds per call of ``fn`` (CUDA events on a GPU, the wall clock on the CPU), after one warm-up."""
    fn()
    if bench_gpu.DEVICE.type != "cuda":
        return bench_gpu.timed(fn, 1)[0] * 1000
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def graphed(fn):
    """``fn`` captured as a CUDA graph (its replay), or ``fn`` itself on the CPU."""
    fn()
    if bench_gpu.DEVICE.type != "cuda":
        return fn
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def report_samplers(dec: FastDecoder, batch: int) -> None:
    """The sampler alone per step (the fused Triton kernel once timed beside it lives in bench/fused_sampler/)."""
    for case, params in bench_gpu.SAMPLER_CASES.items():
        print(f"sampler alone, batch {batch}, {case}: {bench_gpu.sampler_step_us(dec, batch, params):.1f} us/step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="only the step timings")
    parser.add_argument("--random", action="store_true", help="random weights (speed only)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    bench_gpu.DEVICE = device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    dtype = smolkit.models.resolve_dtype(args.dtype, device)
    lm = smolkit.load_model("embedded", device=device, dtype=dtype) if on_gpu and not args.random else \
        bench_gpu.random_lm("smollm2", dtype, device)  # fmt: skip
    tokens = 128 if on_gpu else 8
    dec = FastDecoder(lm, compile=on_gpu and not args.no_compile)
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=50, repetition_penalty=1.1, presence_penalty=0.3,
                            max_new_tokens=tokens, min_tokens=tokens, n=args.batch)  # fmt: skip
    inputs = lm.inputs(PROMPT)
    buf = dec.prepare(args.batch, inputs["input_ids"].shape[1] + tokens)
    print("variant:", vars(args), lm.dtype, "| compile problems:", str(dec.compile_problems)[:300])
    print("set-up seconds:", {k: round(v, 2) for k, v in dec.setup_seconds.items()}, "first calls:",
          dec.compile_seconds)  # fmt: skip
    with torch.inference_mode():
        out = dec.generate(inputs, params, lm.eos_token_ids, 2)
        print(f"generate (device work and one copy to the host): {out.seconds * 1000:.1f} ms for {tokens} tokens")

        def replay():
            buf.progress.step.fill_(1)
            buf.progress.finished.zero_()
            buf.graph.replay() if buf.graph is not None else dec._decode_chunk(buf, CHUNK)

        chunk = device_ms(replay)
        print(f"one chunk ({CHUNK} steps): {chunk:.3f} ms = {chunk / CHUNK:.3f} ms/step")
        print(f"prompt pass: {device_ms(lambda: dec._prefill(inputs, buf), 5):.2f} ms")
        x = torch.randn(args.batch, 1, lm.model.config.hidden_size, device=device, dtype=lm.dtype)
        rope, mask = (buf.positions.cos[:1], buf.positions.sin[:1]), torch.zeros(1, buf.length, device=device)
        pos, small = torch.zeros(1, dtype=torch.int64, device=device), dec.compile and args.batch <= SMALL_BATCH
        model = dec.model
        layer = graphed(lambda: dec.layer(x, torch.zeros_like(x), rope, mask, pos, buf.cache[0], model.layers[0],
                                          model.dims, small))  # fmt: skip
        layer_ms = device_ms(layer)
        print(f"one decoder layer: {layer_ms * 1000:.1f} us; x{len(model.layers)} = "
              f"{layer_ms * len(model.layers):.3f} ms")  # fmt: skip
    report_samplers(dec, args.batch)
    if args.quick:
        return
    start = time.perf_counter()
    lm.fast_decoder = dec
    result = smolkit.generate(lm, PROMPT, params, fast=True)
    print(f"smolkit.generate, all in: {(time.perf_counter() - start) * 1000:.1f} ms ({result.seconds * 1000:.1f}"
          " ms of it on the device)")  # fmt: skip
    activity = torch.profiler.ProfilerActivity.CUDA if on_gpu else torch.profiler.ProfilerActivity.CPU
    with torch.inference_mode(), torch.profiler.profile(activities=[activity]) as prof:
        replay()
        bench_gpu.sync()
    print(prof.key_averages().table(sort_by="cuda_time_total" if on_gpu else "cpu_time_total", row_limit=60))


if __name__ == "__main__":
    main()
