"""What a step of a Llama-architecture text model computes, from plain tensors: embed, layers, norm, lm_head.

``TextModel`` holds the weights of a loaded transformers model (shared with it, no copy) and computes logits for a
prompt (``prompt_logits``) and for one decode step (``decode_logits``) over a static KV cache, with rotary tables
and an additive causal mask. It keeps nothing between calls: the caches, positions and tokens are the caller's
tensors, and the layer function is the caller's choice (``layers.layer_step`` itself, or it compiled). How steps
are replayed (buffers, CUDA graphs, tiers, the loop) is the decoder's business (``decoder``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from smolkit.fastpath.compiled import vary
from smolkit.fastpath.layers import Dims, LayerWeights, layer_step, rms_norm, weights_of
from smolkit.fastpath.support import text_config

__all__ = ["Cache", "Positions", "TextModel", "decode_dims"]

NEG_INF = float("-inf")
Cache = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer, the (keys, values) of every row and position: (B, n_kv, L, head_dim) each."""


class Positions(NamedTuple):
    """The positions 0..L-1 of a cache of length L (L,), and their rotary cos and sin (L, head_dim)."""

    index: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor


@dataclasses.dataclass(frozen=True)
class TextModel:
    """The weights of a text decoder and the shape of its attention; ``rotary`` is the model's own rotary module
    (it knows the model's RoPE scaling), used to build the cos/sin tables once per cache length."""

    embed: torch.Tensor  # (V, H)
    layers: list[LayerWeights]
    norm: torch.Tensor  # (H,)
    lm_head: torch.Tensor  # (V, H)
    rotary: Any
    dims: Dims

    @classmethod
    def of(cls, model: Any) -> TextModel:
        """The text decoder of a transformers model (SmolLM2, or SmolVLM's), its q/k/v and gate/up fused."""
        decoder, config = model.get_decoder(), text_config(model)
        n_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        return cls(
            embed=decoder.embed_tokens.weight,
            layers=[weights_of(layer) for layer in decoder.layers],
            norm=decoder.norm.weight,
            lm_head=model.get_output_embeddings().weight,
            rotary=decoder.rotary_emb,
            dims=Dims(n_heads, config.num_key_value_heads, head_dim, config.rms_norm_eps),
        )

    @property
    def vocab(self) -> int:
        return int(self.lm_head.shape[0])

    def positions(self, length: int) -> Positions:
        """Positions 0..length-1 with their rotary tables, as the model's rotary module computes them."""
        index = torch.arange(length, device=self.lm_head.device)
        cos, sin = self.rotary(torch.zeros(1, dtype=self.lm_head.dtype, device=index.device), index.unsqueeze(0))
        return Positions(index, cos[0], sin[0])

    def empty_cache(self, rows: int, length: int) -> Cache:
        shape = (rows, self.dims.n_kv, length, self.dims.head_dim)
        like = dict(dtype=self.lm_head.dtype, device=self.lm_head.device)
        return [(torch.zeros(shape, **like), torch.zeros(shape, **like)) for _ in self.layers]

    def _layers(self, x: torch.Tensor, cache: Cache, rope, mask, pos, layer: Callable, small: bool, marks: bool):
        """The layers over ``x`` (B, T, H) and the final norm; ``marks``: mark the dimensions a dynamic compile
        varies (``decode_dims``)."""
        rows = x.shape[0]
        delta = torch.zeros_like(x)
        for w, (k_cache, v_cache) in zip(self.layers, cache, strict=True):
            rows_cache = (k_cache[:rows], v_cache[:rows])
            if marks:
                decode_dims(x, delta, mask, rows_cache)
            x, delta = layer(x, delta, rope, mask, pos, rows_cache, w, self.dims, small)
        return rms_norm(x + delta, self.norm, self.dims.eps)

    def decode_logits(
        self, token: torch.Tensor, pos: torch.Tensor, table: Positions, cache: Cache, layer: Callable = layer_step,
        small: bool = False, marks: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """Logits (B, V) float32 after feeding ``token`` (B,) at position ``pos`` (1,), every row at the same
        position; writes that position of ``cache`` and attends to every position up to it."""
        x = F.embedding(token, self.embed).unsqueeze(1)  # (B, 1, H)
        rope = (table.cos.index_select(0, pos), table.sin.index_select(0, pos))  # broadcast over rows and heads
        mask = torch.where(table.index <= pos, 0.0, NEG_INF).unsqueeze(0)  # (1, L)
        h = self._layers(x, cache, rope, mask, pos, layer, small, marks)
        return F.linear(h[:, -1], self.lm_head).float()

    def prompt_logits(self, ids: torch.Tensor, last: torch.Tensor, table: Positions, cache: Cache) -> torch.Tensor:
        """Fill row 0 of ``cache`` with the prompt ``ids`` (1, T) and copy it to every row; the logits (1, V)
        float32 after position ``last`` (1,). Causal: positions after ``last`` (padding) change nothing before it."""
        steps = ids.shape[1]
        pos = table.index[:steps]
        mask = torch.where(table.index.unsqueeze(0) <= pos.unsqueeze(1), 0.0, NEG_INF)
        rope = (table.cos[:steps], table.sin[:steps])
        h = self._layers(F.embedding(ids, self.embed), cache, rope, mask, pos, layer_step, False, False)
        rows = cache[0][0].shape[0]
        for k_cache, v_cache in cache if rows > 1 else ():
            k_cache[1:, :, :steps].copy_(k_cache[:1, :, :steps].expand(rows - 1, -1, -1, -1))
            v_cache[1:, :, :steps].copy_(v_cache[:1, :, :steps].expand(rows - 1, -1, -1, -1))
        return F.linear(h.index_select(1, last)[:, 0], self.lm_head).float()


def decode_dims(x: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor, cache: tuple[torch.Tensor, ...]) -> None:
    """The dimensions of a decode step's layer inputs that change between calls, marked for a dynamic compile: the
    batch (x, delta and the caches: dim 0) and the cache length (the mask's dim 1, the caches' dim 2)."""
    for t in (x, delta, *cache):
        vary(t, 0)
    vary(mask, 1)
    for t in cache:
        vary(t, 2)
