"""Where the fast path's time goes on a GPU: prefill, one CUDA-graph chunk, the sampler alone, host post-processing.

python bench/profile_fastpath.py [--batch 1] [--no-compile]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

import smolkit
from smolkit import SamplingParams, fastpath
from smolkit.fastpath import _rms_norm, _rope
from smolkit.generation import fast_samples

PROMPT = "Write a short story about a robot who learns to paint."


def _gemv(x, w, reduce: bool):
    """x @ w.T; as an elementwise product + sum reduction when ``reduce`` (lets inductor fuse around it at batch 1)."""
    if not reduce:
        return F.linear(x, w)
    return (x.float().unsqueeze(-2) * w.float()).sum(-1).to(x.dtype)


def make_layer(attention: str, gemv_reduce: bool):
    """Variants of fastpath.layer_step for one decode token (T = 1), for timing experiments only."""
    if attention == "matmul" and not gemv_reduce:
        return fastpath.layer_step

    def layer(x, delta, cos, sin, mask, pos, k_cache, v_cache, ln1, wqkv, wo, ln2, wgu, wd, eps, n_heads, n_kv):
        x = x + delta
        batch, steps, _ = x.shape
        hd = k_cache.shape[-1]
        group = n_heads // n_kv
        qkv = _gemv(_rms_norm(x, ln1, eps), wqkv, gemv_reduce)
        q, k, v = qkv.split([n_heads * hd, n_kv * hd, n_kv * hd], dim=-1)
        q = _rope(q.view(batch, steps, n_heads, hd).transpose(1, 2), cos, sin)
        k = _rope(k.view(batch, steps, n_kv, hd).transpose(1, 2), cos, sin)
        k_cache.index_copy_(2, pos, k)
        v_cache.index_copy_(2, pos, v.view(batch, steps, n_kv, hd).transpose(1, 2))
        if attention == "sdpa":
            attn = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask.to(q.dtype), enable_gqa=True)
            attn = attn.transpose(1, 2).reshape(batch, steps, n_heads * hd)
        elif attention == "reduce":  # decode only: q . K and p . V as sum reductions
            qv = q.view(batch, n_kv, group, 1, hd).float()
            scores = (qv * k_cache.unsqueeze(2).float()).sum(-1) * hd**-0.5 + mask  # (B, kv, g, L)
            p = torch.softmax(scores, dim=-1)
            attn = (p.unsqueeze(-1) * v_cache.unsqueeze(2).float()).sum(-2).to(x.dtype)  # (B, kv, g, hd)
            attn = attn.reshape(batch, 1, n_heads * hd)
        else:  # matmul, as fastpath.layer_step
            qg = q.reshape(batch, n_kv, group, hd)
            scores = torch.matmul(qg, k_cache.transpose(-1, -2)).float() * hd**-0.5 + mask
            attn = torch.matmul(torch.softmax(scores, dim=-1).to(v_cache.dtype), v_cache)
            attn = attn.reshape(batch, 1, n_heads * hd)
        x = x + _gemv(attn, wo, gemv_reduce)
        gate, up = _gemv(_rms_norm(x, ln2, eps), wgu, gemv_reduce).chunk(2, dim=-1)
        return x, _gemv(F.silu(gate) * up, wd, gemv_reduce)

    return layer


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--attention", choices=["matmul", "sdpa", "reduce"], default="reduce",
                        help="small-batch layer variant (default: as fastpath.decode_layer_small)")  # fmt: skip
    parser.add_argument("--no-gemv-reduce", dest="gemv_reduce", action="store_false")
    parser.add_argument("--sampler-eager", action="store_true")
    parser.add_argument("--quick", action="store_true", help="only the step timings")
    parser.add_argument("--random", action="store_true", help="random weights (speed only); tokenizer from "
                        "$SMOLKIT_BENCH_TOKENIZER")  # fmt: skip
    args = parser.parse_args()
    if args.random:
        import bench_gpu  # this script's folder is on sys.path

        lm = bench_gpu.random_lm("smollm2", torch.bfloat16)
    else:
        lm = smolkit.load_model("embedded", device="cuda")
    dec = fastpath.FastDecoder(lm, compile=not args.no_compile)
    if not args.no_compile and (args.attention != "reduce" or not args.gemv_reduce):
        dec.layer_small = fastpath._MaybeCompiled(make_layer(args.attention, args.gemv_reduce), True)
    if args.sampler_eager:
        dec.sampler = fastpath.Sampler(compile=False)
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=50, repetition_penalty=1.1, presence_penalty=0.3,
                            max_new_tokens=128, min_tokens=128, n=args.batch)  # fmt: skip
    inputs = lm.inputs(PROMPT)
    buf = dec.prepare(args.batch, inputs["input_ids"].shape[1] + 128)
    print("variant:", vars(args), "| compile problems:", str(dec.compile_problems)[:300])
    print(
        "set-up seconds:", {k: round(v, 2) for k, v in dec.setup_seconds.items()}, "first calls:", dec.compile_seconds
    )
    with torch.inference_mode():
        state, seconds = dec.generate(inputs, params, lm.eos_token_ids, 2)
        print(f"generate (device work, no post-processing): {seconds * 1000:.1f} ms for 128 tokens")
        chunk = cuda_ms(lambda: (state.step.fill_(1), state.finished.zero_(), buf.graph.replay()))
        print(f"one graph replay ({fastpath.CHUNK} steps): {chunk:.3f} ms = {chunk / fastpath.CHUNK:.3f} ms/step")
        prefill = cuda_ms(lambda: dec._prefill(inputs, buf), 5)
        print(f"prefill (transformers forward + cache copy): {prefill:.2f} ms")
        logits = torch.randn(args.batch, lm.vocab_size, device="cuda")
        graph = torch.cuda.CUDAGraph()
        state.step.zero_()
        with torch.cuda.graph(graph):
            fastpath.sample_step(logits, buf.noise, state)
        print(f"sampler alone (graph): {cuda_ms(graph.replay):.3f} ms/step")
        layer = dec.layers[0]
        x = torch.randn(args.batch, 1, 576, device="cuda", dtype=lm.dtype)
        delta = torch.zeros_like(x)
        cos, sin = buf.cos[:1], buf.sin[:1]
        mask = torch.zeros(1, buf.arange.numel(), device="cuda")
        k, v = buf.caches[0]
        pos = torch.zeros(1, dtype=torch.int64, device="cuda")

        layer_fn = dec.layer_small if args.batch <= fastpath.SMALL_BATCH else dec.layer

        def one_layer():
            layer_fn(x, delta, cos, sin, mask, pos, k, v, layer.ln1, layer.wqkv, layer.wo, layer.ln2, layer.wgu,
                         layer.wd, dec.eps, dec.n_heads, dec.n_kv)  # fmt: skip

        lgraph = torch.cuda.CUDAGraph()
        one_layer()
        with torch.cuda.graph(lgraph):
            one_layer()
        layer_ms = cuda_ms(lgraph.replay)
        print(f"one decoder layer (graph): {layer_ms * 1000:.1f} us; x30 = {layer_ms * 30:.3f} ms")
        if args.quick:
            return
        start = time.perf_counter()
        samples = fast_samples(lm, state, args.batch, 128, set(lm.eos_token_ids))
        post = (time.perf_counter() - start) * 1000
        print(f"host post-processing (records, decode): {post:.1f} ms, {len(samples)} samples")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            state.step.fill_(1)
            state.finished.zero_()
            buf.graph.replay()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30))


if __name__ == "__main__":
    main()
