"""The GPU fast path: decode steps and every sampling stage on the device, many steps replayed as one CUDA graph.

Plain ``model.generate()`` spends ~70-95 ms a token at batch 1 on an H100 launching small kernels from Python.
Here one decode step of a Llama-architecture text model (SmolLM2, SmolVLM's text decoder) is a handful of fused
kernels over a static KV cache, and the sampling stages run on the device with transformers' exact semantics and
order; a chunk of steps is captured once in a CUDA graph and replayed. Read it in this order:

- ``layers``: one decoder layer as one function (``torch.compile`` fuses it; one compiled graph serves every layer);
- ``model``: what a step computes from plain tensors: embed, the layers, the norm, lm_head, the rotary tables;
- ``sampler``: the sampling stages and the draw, as tensors, so that a captured graph serves any parameters;
- ``decoder``: how steps are replayed: static buffers, CUDA graphs, the plain and compiled tiers, the loop, and the
  random generator each call seeds right before its first draw (same seed, same tokens).

``compiled`` wraps a function in torch.compile with a fallback; ``support`` says which models and torch versions the
fast path serves and where its compiled kernels are cached.

Written by hand because no maintained library offers this for transformers models: transformers' own
``cache_implementation="static"`` compiles the whole forward for ~50 s per shape and keeps sampling on the host.

The same code runs eagerly (no graph, no compile) on the CPU, where the tests check it against transformers.
``smolkit.generate`` picks this path on CUDA (``fast=None``), falls back to plain transformers otherwise.
"""

from smolkit.fastpath.decoder import FastDecoder, FastResult, get_fast_decoder
from smolkit.fastpath.support import MIN_TORCH, compile_cache_dir, fast_path_problem

__all__ = ["MIN_TORCH", "FastDecoder", "FastResult", "compile_cache_dir", "fast_path_problem", "get_fast_decoder"]
