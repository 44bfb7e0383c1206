"""A function through torch.compile when asked, falling back to the plain function if the compiler fails on it."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from smolkit.fastpath.support import use_compile_cache

__all__ = ["MaybeCompiled", "vary"]


class MaybeCompiled:
    """``fn`` through torch.compile (fullgraph) when ``compile``; if the compiler fails on it, ``fn`` itself from
    then on, with one warning (``problem`` says why). Shapes are static unless ``dynamic``: then the dimensions
    the caller marks with ``vary`` are compiled once for every size (the others stay static).

    The first call must happen outside CUDA-graph capture (the decoder's warm-up does it), so that a failure is
    caught there; it is where compiling starts, so it is also where inductor's cache is pointed at the kit's
    (``support.use_compile_cache``).
    """

    def __init__(self, fn: Callable[..., Any], compile: bool, dynamic: bool = False, backend: Any = "inductor"):
        self.fn, self.wanted = fn, compile
        self.dynamic, self.backend = dynamic, backend
        self.compiled: Callable[..., Any] | None = None  # torch.compile(fn), made by the first call
        self.problem: str | None = None
        self.first_call_seconds: float | None = None  # compile time (or cache load), for the benchmark's record

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def varies(self) -> bool:
        """Whether marking dimensions with ``vary`` does anything: compiled with dynamic shapes (and not fallen
        back to ``fn``, which would ignore the marks)."""
        return self.dynamic and self.wanted and self.problem is None

    def __call__(self, *args: Any) -> Any:
        if not self.wanted or self.problem is not None:
            return self.fn(*args)
        try:
            if self.compiled is not None:
                return self._quietly(*args)
            return self._first_call(*args)
        except Exception as err:  # a compiler failure must not cost the user the fast path
            self.problem = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
            warnings.warn(
                f"smolkit fast path: torch.compile failed on {self.name}, running it eagerly ({self.problem})",
                stacklevel=2,
            )
            return self.fn(*args)

    def _first_call(self, *args: Any) -> Any:
        """Where compiling starts: the compile cache's location is set here (torch.compile itself also sets
        TORCHINDUCTOR_CACHE_DIR when it is called), not when the piece is built."""
        if self.backend == "inductor":
            use_compile_cache()
        options = dict(fullgraph=True, dynamic=None if self.dynamic else False, backend=self.backend)
        self.compiled = torch.compile(self.fn, **options)
        start = time.perf_counter()
        out = self._quietly(*args)
        self.first_call_seconds = time.perf_counter() - start
        return out

    def _quietly(self, *args: Any) -> Any:
        """The compiled call without the compiler's own notes (inductor warns about its choices, e.g. "Online
        softmax is disabled..."): a learner's notebook is no place for them. Python calls it only while a graph is
        warmed up or captured, so the filter costs no decode step."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"torch\._inductor")
            return self.compiled(*args)


def vary(tensor: torch.Tensor, *dims: int) -> None:
    """Mark ``dims`` of ``tensor`` as varying between calls, for a ``MaybeCompiled(dynamic=True)``: compiled once
    for all their sizes instead of once per size. Sizes 0 and 1 stay specialised (torch.compile's rule), and a
    dimension the compiled code must specialise is left static rather than failing (``maybe_mark_dynamic``)."""
    for dim in dims:
        if tensor.shape[dim] > 1:
            torch._dynamo.maybe_mark_dynamic(tensor, dim)
