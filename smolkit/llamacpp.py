"""A real llama.cpp, through llama-cpp-python, running the kit's own GGUF: its logits, its draws, its server.

The embedded model is a Q4_1 GGUF (``smolkit.embedded``); transformers de-quantises it to float32, llama.cpp runs
it as it is (4-bit weights, activations quantised to 8 bits for the products). The same token ids go into both
(the kit's tokenisation, chat template included), so what differs is the arithmetic alone.

llama-cpp-python is optional (``make test-engines`` builds it, ``environment/llama_cpp.sh``): ``available()`` says
whether it imports. Its sampler chain is the one ``Llama.generate`` builds (``Llama._init_sampler``, 0.3.36):
penalties over the tokens the chain has accepted, top_k, typical_p, top_p, min_p, temperature, then a draw.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from smolkit.distribution import Distribution, next_token_distribution, prepare_inputs
from smolkit.embedded import embedded_gguf_path
from smolkit.engines import in_engine, total_variation
from smolkit.models import LoadedModel
from smolkit.params import SamplingParams

__all__ = [
    "LlamaServer",
    "available",
    "engine_distances",
    "llama_distribution",
    "llama_draws",
    "load_llama",
    "sampler_kwargs",
]

N_THREADS = 2
N_CTX = 1024


def available() -> bool:
    """Whether llama-cpp-python is installed (``make test-engines`` builds and installs it)."""
    return importlib.util.find_spec("llama_cpp") is not None


_LOADED: dict[tuple[str, int, bool], Any] = {}


@atexit.register
def _close_loaded() -> None:
    """Free the cached models before the interpreter tears llama_cpp down (its own finaliser fails that late)."""
    while _LOADED:
        _LOADED.popitem()[1].close()


def load_llama(n_threads: int = N_THREADS, logits_all: bool = False) -> Any:
    """llama-cpp-python's ``Llama`` on the embedded GGUF, loaded once per setting (an explicit cache: ``_LOADED``)."""
    from llama_cpp import Llama

    key = (str(embedded_gguf_path()), n_threads, logits_all)
    if key not in _LOADED:
        _LOADED[key] = Llama(
            model_path=key[0], n_ctx=N_CTX, n_threads=n_threads, n_threads_batch=n_threads, logits_all=logits_all,
            verbose=False,
        )  # fmt: skip
    return _LOADED[key]


def _eval(llm: Any, ids: Sequence[int]) -> torch.Tensor:
    """Evaluate ``ids`` from an empty context and return the next token's raw logits (float32)."""
    import llama_cpp
    import numpy as np

    llm.reset()
    llm.eval(list(ids))
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return torch.from_numpy(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy())


def llama_distribution(
    lm: LoadedModel, prompt: str, params: SamplingParams, generated: str | Sequence[int] = "", llm: Any = None
) -> Distribution:
    """The kit's Distribution for ``prompt`` (+ ``generated``) built on **llama.cpp's** raw logits instead of
    transformers': the same token ids, evaluated by llama.cpp on the Q4_1 GGUF. ``smolkit.engines.in_engine``
    then gives any engine's distribution on them."""
    inputs, prompt_length = prepare_inputs(lm, prompt, params, generated)
    ids = inputs["input_ids"].cpu()
    logits = _eval(llm or load_llama(), ids[0].tolist())
    return Distribution.from_logits(lm, params, logits, ids, prompt_length)


def sampler_kwargs(params: SamplingParams) -> dict[str, Any]:
    """``params`` in ``Llama._init_sampler``'s (and ``Llama.generate``'s) names; temperature 0 is its greedy."""
    return {
        "top_k": params.top_k, "top_p": params.top_p, "min_p": params.min_p, "typical_p": 1.0,
        "temp": 0.0 if params.greedy else params.temperature, "repeat_penalty": params.repetition_penalty,
        "frequency_penalty": params.frequency_penalty, "presence_penalty": params.presence_penalty,
    }  # fmt: skip


def llama_draws(dist: Distribution, n: int, seed: int = 0, llm: Any = None) -> torch.Tensor:
    """How often llama.cpp draws each token, over ``n`` independent draws of the next token of ``dist`` (its
    prompt, generated ids and parameters): counts (vocab,).

    The context is evaluated once; each draw is a fresh sampler chain (the one ``Llama.generate`` builds, seeded
    ``seed + i``) that is first given the generated tokens, as ``llama_sampler_sample`` gives it each token it
    draws (``llama_sampler_accept``), then samples from the context's last logits: no new forward pass per draw.
    """
    llm = llm or load_llama()
    ids = dist.input_ids[0].tolist()
    _eval(llm, ids)
    kwargs = sampler_kwargs(dist.params)
    counts = collections.Counter()
    for i in range(n):
        llm.set_seed(seed + i)
        chain = llm._init_sampler(**kwargs)
        for token in ids[dist.prompt_length :]:
            chain.accept(token)
        counts[chain.sample(llm._ctx, -1)] += 1
        chain.close()
    out = torch.zeros(dist.logits.numel())
    for token, c in counts.items():
        out[token] = c
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1 with the embedded GGUF, as a context manager:
    ``with LlamaServer() as server: server.chat(body)``. Started in its own process group, stopped on exit."""

    n_threads: int = N_THREADS
    n_ctx: int = 512
    timeout: float = 300.0
    port: int = 0
    log: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LlamaServer:
        self.port = self.port or _free_port()
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
               "--n_threads_batch", str(self.n_threads), "--model_alias", "smollm2"]  # fmt: skip
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-cpp-python's server exited with {self.proc.returncode} (log: {self.log})")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/v1/models", timeout=2) as r:
                if r.status == 200:
                    return self
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"llama-cpp-python's server did not answer within {self.timeout:g} s (log: {self.log})")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)

    def chat(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` (a flat JSON dict, e.g. ``to_openai(params, messages=..., http=True)``) to
        /v1/chat/completions and return the answer."""
        data = json.dumps(dict(body)).encode()
        request = urllib.request.Request(
            self.url + "/v1/chat/completions", data, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as r:
            return json.loads(r.read())



def engine_distances(
    lm: LoadedModel, prompt: str, params: SamplingParams, name: str = "llama-cpp-python", llm: Any = None
) -> dict[str, float]:
    """How far llama.cpp's next-token distribution is from the kit's for the same preset (total variation), and
    why. "total": the kit (transformers' order, float32 logits) against engine ``name`` on llama.cpp's own logits.
    "order": the kit's logits in transformers' order against the same logits in the engine's order (the rules
    alone). "numerics": the engine's order on the kit's logits against on llama.cpp's (the arithmetic alone: Q4_1
    weights, 8-bit activations vs de-quantised float32). "raw": the two models' raw distributions. total <= order +
    numerics (the triangle inequality); ``in_engine`` says which stage makes the order part.
    """
    kit = next_token_distribution(lm, prompt, params)
    llama = llama_distribution(lm, prompt, params, llm=llm)
    kit_engine, llama_engine = in_engine(kit, name), in_engine(llama, name)
    return {
        "total": total_variation(kit.probs, llama_engine.probs),
        "order": total_variation(kit.probs, kit_engine.probs),
        "numerics": total_variation(kit_engine.probs, llama_engine.probs),
        "raw": total_variation(kit.stage("raw"), llama.stage("raw")),
    }
