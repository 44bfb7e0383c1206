"""One decoder layer of a Llama-architecture text model (SmolLM2, SmolVLM's text decoder) over a static KV cache.

The same maths as transformers' LlamaDecoderLayer (RMSNorm in float32, rotary embeddings, grouped-query attention,
SiLU-gated MLP), written as one function so that ``torch.compile`` fuses it into a handful of kernels and one
compiled graph serves every layer. At small batch its matrix-vector products are written as reductions the
compiler fuses with the norms around them (``small=True``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["SMALL_BATCH", "Dims", "LayerWeights", "layer_step", "rms_norm", "weights_of"]


@dataclasses.dataclass(frozen=True)
class Dims:
    """The shape of the attention: query heads, key/value heads, head size, and the RMSNorm epsilon."""

    n_heads: int
    n_kv: int
    head_dim: int
    eps: float


@dataclasses.dataclass(frozen=True)
class LayerWeights:
    """One layer's weights: the norms, the fused q/k/v projection, the output projection, the fused gate/up
    projection and the down projection (the fused ones are shared with the model's modules: no extra memory)."""

    ln1: torch.Tensor
    wqkv: torch.Tensor
    wo: torch.Tensor
    ln2: torch.Tensor
    wgu: torch.Tensor
    wd: torch.Tensor


def _fuse_linear(modules: list[torch.nn.Linear]) -> torch.Tensor:
    """One weight for several projections of the same input, shared with the modules (they become views of it), so
    the fused GEMM costs no extra memory and the model itself is unchanged."""
    fused = torch.cat([m.weight.data for m in modules], dim=0)
    start = 0
    for m in modules:
        rows = m.weight.shape[0]
        m.weight.data = fused[start : start + rows]
        start += rows
    return fused


def weights_of(layer: Any) -> LayerWeights:
    """The weights of a transformers LlamaDecoderLayer, with q/k/v and gate/up fused."""
    attn, mlp = layer.self_attn, layer.mlp
    return LayerWeights(
        ln1=layer.input_layernorm.weight,
        wqkv=_fuse_linear([attn.q_proj, attn.k_proj, attn.v_proj]),
        wo=attn.o_proj.weight,
        ln2=layer.post_attention_layernorm.weight,
        wgu=_fuse_linear([mlp.gate_proj, mlp.up_proj]),
        wd=mlp.down_proj.weight,
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm exactly: normalise in float32, cast back, then scale."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


SMALL_BATCH = 4
"""Up to this many rows, compiled decode steps compute their matrix-vector products as fused reductions."""


def _matvec(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.linear(v, w)`` as an elementwise product and a sum accumulated in float32: inductor fuses it with the
    norms and activations around it (measured on an H100 at batch 1: 24 us a layer against 30 us with cuBLAS
    GEMVs, see bench/RESULTS.md). Only for compiled decoding: eagerly it would materialise the products."""
    return (v.float().unsqueeze(-2) * w.float()).sum(-1).to(v.dtype)


def _attend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, mask: torch.Tensor, d: Dims,
            small: bool) -> torch.Tensor:
    """Grouped-query attention of q (B, n_heads, T, hd) over the whole cache (B, n_kv, L, hd) with the additive
    ``mask`` (T, L): softmax(q k^T / sqrt(hd) + mask) v, scores and softmax in float32. ``small``: both products
    as fused reductions (compiled decoding at small batch; measured on the H200 at batch 1: cuBLAS took 15 us a
    layer for these two tiny products, bench/RESULTS.md)."""
    batch, _, steps, _ = q.shape
    group = d.n_heads // d.n_kv
    q = q.reshape(batch, d.n_kv, group * steps, d.head_dim)  # query heads of a kv head side by side
    if small:
        scores = (q.float().unsqueeze(-2) * k_cache.float().unsqueeze(-3)).sum(-1)
    else:
        scores = torch.matmul(q, k_cache.transpose(-1, -2)).float()
    scores = scores.mul(d.head_dim**-0.5).view(batch, d.n_kv, group, steps, -1) + mask
    probs = torch.softmax(scores, dim=-1).view(batch, d.n_kv, group * steps, -1)
    if small:
        attn = (probs.unsqueeze(-1) * v_cache.float().unsqueeze(-3)).sum(-2).to(v_cache.dtype)
    else:
        attn = torch.matmul(probs.to(v_cache.dtype), v_cache)
    return attn.view(batch, d.n_heads, steps, d.head_dim)


def layer_step(
    x: torch.Tensor,
    delta: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor,
    pos: torch.Tensor,
    cache: tuple[torch.Tensor, torch.Tensor],
    w: LayerWeights,
    d: Dims,
    small: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoder layer for T new tokens per row: x (B, T, H); ``rope`` the (cos, sin) of the T positions;
    ``cache`` the (keys, values) of shape (B, n_kv, L, head_dim), written at ``pos`` (T positions); ``mask`` (T, L)
    additive. Decode steps use T = 1, the prompt T = its length. ``small``: the projections and the attention's
    products as fused reductions (``_matvec``, ``_attend``), for compiled decode steps at small batch.

    The residual stream is carried as (x, delta): the layer adds the previous layer's MLP output first, so that this
    add and the following RMSNorm fuse into one kernel when compiled. Returns (x, this layer's MLP output).
    """
    project = _matvec if small else F.linear
    x = x + delta
    batch, steps, _ = x.shape
    cos, sin = rope
    k_cache, v_cache = cache
    qkv = project(rms_norm(x, w.ln1, d.eps), w.wqkv)
    q, k, v = qkv.split([d.n_heads * d.head_dim, d.n_kv * d.head_dim, d.n_kv * d.head_dim], dim=-1)
    q = _rope(q.view(batch, steps, d.n_heads, d.head_dim).transpose(1, 2), cos, sin)  # (B, n_heads, T, hd)
    k = _rope(k.view(batch, steps, d.n_kv, d.head_dim).transpose(1, 2), cos, sin)
    k_cache.index_copy_(2, pos, k)
    v_cache.index_copy_(2, pos, v.view(batch, steps, d.n_kv, d.head_dim).transpose(1, 2))
    attn = _attend(q, k_cache, v_cache, mask, d, small)  # (B, n_heads, T, hd)
    x = x + project(attn.transpose(1, 2).reshape(batch, steps, d.n_heads * d.head_dim), w.wo)
    gate, up = project(rms_norm(x, w.ln2, d.eps), w.wgu).chunk(2, dim=-1)
    return x, project(F.silu(gate) * up, w.wd)
