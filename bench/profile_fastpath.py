"""Where a fast-path decode step spends its time on a GPU: one CUDA-graph chunk, the sampler alone, one decoder
layer, the prompt pass, the host's post-processing, and the profiler's kernel table for one chunk.

    python bench/profile_fastpath.py [--batch 1] [--dtype float32] [--random] [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

import smolkit
from smolkit import SamplingParams
from smolkit.fastpath import FastDecoder
from smolkit.fastpath.decoder import CHUNK
from smolkit.fastpath.layers import SMALL_BATCH

PROMPT = "Write a short story about a robot who learns to paint."


def cuda_ms(fn, repeat: int = 20) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def graphed(fn) -> torch.cuda.CUDAGraph:
    fn()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="only the step timings")
    parser.add_argument("--random", action="store_true", help="random weights (speed only)")
    args = parser.parse_args()
    if args.random:
        import bench_gpu  # this script's folder is on sys.path

        lm = bench_gpu.random_lm("smollm2", smolkit.models.resolve_dtype(args.dtype, torch.device("cuda")))
    else:
        lm = smolkit.load_model("embedded", device="cuda", dtype=args.dtype)
    dec = FastDecoder(lm, compile=not args.no_compile)
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=50, repetition_penalty=1.1, presence_penalty=0.3,
                            max_new_tokens=128, min_tokens=128, n=args.batch)  # fmt: skip
    inputs = lm.inputs(PROMPT)
    buf = dec.prepare(args.batch, inputs["input_ids"].shape[1] + 128)
    print("variant:", vars(args), lm.dtype, "| compile problems:", str(dec.compile_problems)[:300])
    print("set-up seconds:", {k: round(v, 2) for k, v in dec.setup_seconds.items()}, "first calls:",
          dec.compile_seconds)  # fmt: skip
    with torch.inference_mode():
        out = dec.generate(inputs, params, lm.eos_token_ids, 2)
        print(f"generate (device work and one copy to the host): {out.seconds * 1000:.1f} ms for 128 tokens")

        def replay():
            buf.progress.step.fill_(1)
            buf.progress.finished.zero_()
            buf.graph.replay()

        chunk = cuda_ms(replay)
        print(f"one graph replay ({CHUNK} steps): {chunk:.3f} ms = {chunk / CHUNK:.3f} ms/step")
        print(f"prompt pass: {cuda_ms(lambda: dec._prefill(inputs, buf), 5):.2f} ms")
        logits = torch.randn(args.batch, lm.vocab_size, device="cuda")
        buf.progress.step.zero_()
        sampler = graphed(lambda: dec._sample(logits, buf))
        print(f"sampler alone (graph): {cuda_ms(sampler.replay) * 1000:.1f} us/step")
        x = torch.randn(args.batch, 1, lm.model.config.hidden_size, device="cuda", dtype=lm.dtype)
        rope, mask = (buf.cos[:1], buf.sin[:1]), torch.zeros(1, buf.arange.numel(), device="cuda")
        pos, small = torch.zeros(1, dtype=torch.int64, device="cuda"), dec.compile and args.batch <= SMALL_BATCH
        layer = graphed(lambda: dec.layer(x, torch.zeros_like(x), rope, mask, pos, buf.caches[0], dec.layers[0],
                                          dec.dims, small))  # fmt: skip
        layer_ms = cuda_ms(layer.replay)
        print(f"one decoder layer (graph): {layer_ms * 1000:.1f} us; x{len(dec.layers)} = "
              f"{layer_ms * len(dec.layers):.3f} ms")  # fmt: skip
        if args.quick:
            return
        start = time.perf_counter()
        result = smolkit.generate(lm, PROMPT, params)
        print(f"smolkit.generate, all in: {(time.perf_counter() - start) * 1000:.1f} ms ({result.seconds * 1000:.1f}"
              " ms of it on the device)")  # fmt: skip
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            replay()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30))


if __name__ == "__main__":
    main()
