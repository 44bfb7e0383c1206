"""Float noise of the size other CPUs produce, planted in the notebooks' kernels to find fragile printed outputs.

Why: the committed notebook outputs are compared with what a fresh run prints (nbval, ``tests/nbval_numbers.py``).
Another processor (Intel or AMD, AVX2 or AVX-512, MKL's paths, one thread or two) computes the same float32 model
with sums in other orders, so its next-token probabilities differ from ours by about 1e-6 relative. A printed value
that such noise can change (``53,715`` vs ``53,716``, a count of tokens above a threshold, a decimal on a rounding
edge) fails on somebody's machine, and sampling a few machines cannot find them all. This module makes the noise on
any one machine: each ``torch.nn.Linear`` output is scaled by ``1 + scale * r``, with ``r`` a fixed standard normal
vector per layer (drawn from the seed and the layer's weights, so a run is deterministic and repeatable, and two
seeds give two independent perturbations). A stored output that still matches under several seeds is robust by
construction; one that moves is fragile, whatever machine it was made on.

The default scale, 1e-6, is the relative difference measured between CPUs' float32 kernels; the weights themselves
are left untouched.

Use it through the nbval plugin: ``pytest -p tests.nbval_numbers --nbval --float-noise 3 notebooks/...`` (``make
test-notebooks-noise-3``) gives every notebook kernel an IPython startup file that calls ``install(3)`` before the
first cell runs. ``install`` is also usable directly in a Python session.

Written by hand: no library plants relative noise in a model's layer outputs.
"""

from __future__ import annotations

import weakref
import zlib
from pathlib import Path

SCALE = 1e-6
"""Relative size of the noise: float32 kernels of different CPUs give next-token probabilities ~1e-6 apart."""

_factors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_handle = None


def layer_factor(module, seed: int, scale: float = SCALE):
    """The fixed ``1 + scale * r`` of one linear layer: ``r ~ N(0, 1)`` per output feature, from the seed and a
    checksum of the layer's weight bytes (the same layer gets the same factor in every run and after a reload)."""
    import torch

    weight = module.weight.detach()
    sample = weight.reshape(-1)[:1024].float().cpu().numpy().tobytes()
    generator = torch.Generator().manual_seed(zlib.crc32(sample, seed) + 1_000_003 * seed)
    r = torch.randn(weight.shape[0], generator=generator, dtype=torch.float64)
    return (1.0 + scale * r).to(dtype=weight.dtype, device=weight.device)


def _perturb(seed: int, scale: float):
    import torch

    def hook(module, args, output):
        if not isinstance(module, torch.nn.Linear) or not isinstance(output, torch.Tensor):
            return None
        key = (seed, scale)
        cached = _factors.get(module)
        if cached is None or cached[0] != key:
            cached = (key, layer_factor(module, seed, scale))
            _factors[module] = cached
        return output * cached[1]

    return hook


def install(seed: int, scale: float = SCALE) -> None:
    """Scale every ``torch.nn.Linear`` output in this process by its layer's ``1 + scale * r`` (a global forward
    hook, so models loaded later are perturbed too). Calling it again replaces the earlier noise.

    >>> import torch
    >>> layer = torch.nn.Linear(4, 3)
    >>> x = torch.ones(1, 4)
    >>> install(1, scale=1e-3)
    >>> noisy = layer(x)
    >>> uninstall()
    >>> clean = layer(x)
    >>> bool(torch.allclose(noisy, clean, rtol=1e-2)), bool(torch.equal(noisy, clean))
    (True, False)
    """
    import torch

    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 1:
        raise ValueError(f"seed must be a positive integer, got {seed!r}")
    if not 0 < scale < 1:
        raise ValueError(f"scale must be in (0, 1), got {scale!r}")
    uninstall()
    global _handle
    _handle = torch.nn.modules.module.register_module_forward_hook(_perturb(seed, scale))


def uninstall() -> None:
    """Remove the noise ``install`` planted (a no-op when there is none)."""
    global _handle
    if _handle is not None:
        _handle.remove()
        _handle = None


def startup_file(seed: int, scale: float = SCALE) -> str:
    """An IPython startup file that loads this module by its path and calls ``install(seed, scale)``, leaving no
    name behind in the notebook's namespace."""
    return (
        "def _smolkit_float_noise():\n"
        "    import importlib.util\n"
        f"    spec = importlib.util.spec_from_file_location('smolkit_float_noise', {str(Path(__file__))!r})\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        f"    module.install({int(seed)!r}, {float(scale)!r})\n"
        "_smolkit_float_noise()\n"
        "del _smolkit_float_noise\n"
    )
