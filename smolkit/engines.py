"""The engine lens: the distribution each serving engine samples from, for the same parameters and the same logits.

The engines implement the same stages (penalties, temperature, top_k, top_p, min_p) and differ in three ways the
kit can show on one set of raw logits: the **order** of the stages, **which tokens the penalties count**, and the
**defaults** a request that leaves a field unset receives. Each stage here is the one implementation the kit already
has (transformers' processors and ``smolkit.processors``, applied by ``smolkit.hf.apply_stages``); an engine is only
an order, a penalty history and a table of defaults, each read from the engine's source at the version named:

=================  =====================================================================  ======================
engine             order (stages not set are skipped)                                     penalties count
=================  =====================================================================  ======================
transformers       penalties, temperature, top_k, top_p, min_p                             repetition: prompt +
                   (transformers 5.23 ``generation/utils.py`` ``_get_logits_processor``)   generated
vllm               penalties, temperature (at least 0.01), min_p, top_k, top_p             as transformers
                   (vLLM 0.24 ``v1/sample/sampler.py``)
sglang             penalties, temperature, then top_k and top_p **jointly** (both read     generated only
                   the same probabilities) or, with min_p, top_k, top_p, min_p in turn     (``penaltylib/
                   (``python/sglang/srt/layers/sampler.py``, flashinfer "joint" order)     repetition_penalty.py``)
llama.cpp          penalties, top_k, top_p, min_p, temperature **last** (llama-server's    the last 64 tokens,
                   ``common_params_sampling::samplers``: penalties; dry; top_n_sigma;      prompt included
                   top_k; typ_p; top_p; min_p; xtc; temperature, at llama.cpp 0c1e570,     (``penalty_last_n``)
                   the commit llama-cpp-python 0.3.36 vendors)
llama-cpp-python   penalties, top_k, typical_p, top_p, min_p, temperature                  the last 64
                   (0.3.36 ``llama_cpp/llama.py`` ``Llama._init_sampler``)                 generated tokens only
=================  =====================================================================  ======================

In the llama.cpp chains top_p and min_p therefore read the probabilities at temperature 1: a high temperature
flattens only what they already kept. llama-cpp-python builds a fresh sampler chain per request and never feeds it
the prompt (``Llama.generate``), so its penalties count generated tokens only, at most the last
``last_n_tokens_size`` (64); llama-server feeds the prompt in (``server-context.cpp``, ``common_sampler_accept``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import RepetitionPenaltyLogitsProcessor

from smolkit.distribution import Distribution
from smolkit.embedded import embedded_gguf_path
from smolkit.hf import apply_stages, processors_for, stage_name, to_transformers
from smolkit.params import SamplingParams
from smolkit.vllm_rules import VERSION as VLLM_VERSION

__all__ = [
    "ENGINES",
    "PENALTY_STAGES",
    "Engine",
    "EngineExplanation",
    "JointFilter",
    "defaults_rows",
    "engine",
    "engine_rows",
    "explain_engine",
    "gguf_sampling_keys",
    "in_engine",
    "logprob_flags",
    "logprob_lens",
    "received_params",
    "total_variation",
]

PENALTY_STAGES = ("repetition_penalty", "frequency_penalty", "presence_penalty")
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
                   "frequency_penalty", "max_new_tokens")  # fmt: skip
"""The SamplingParams fields whose defaults differ between engines (what ``explain(..., engine=)`` lists)."""


@dataclasses.dataclass(frozen=True)
class Engine:
    """One engine's sampling semantics: stage order, penalty history, request names, defaults, logprob flags.

    ``order``: kit stage names in the order the engine applies them. ``joint``: stages that all read the same
    input and keep a token only where each keeps it (SGLang's top_k and top_p without min_p). ``penalty_window``:
    only the last n tokens count for the penalties (None: all); ``prompt_in_window``: whether prompt tokens enter
    that history (for repetition_penalty; presence/frequency follow it too in llama.cpp). ``request_names``: the
    request field the engine's server reads for each kit field (a field absent here is not read: the default
    applies). ``defaults``: what a request that leaves a field unset gets, in the kit's vocabulary (None: up to the
    context). ``config_sources``: where else defaults come from (the model's generation_config.json, the GGUF).
    ``logprobs``: for "raw", "after temperature" and "processed", the flag that returns it ("" when none does).
    """

    name: str
    version: str
    source: str
    order: tuple[str, ...]
    defaults: Mapping[str, Any]
    request_names: Mapping[str, str]
    logprobs: Mapping[str, str]
    joint: tuple[str, ...] = ()
    penalty_window: int | None = None
    prompt_in_window: bool = True
    config_sources: tuple[str, ...] = ()
    min_temperature: float = 0.0

    def is_joint(self, params: SamplingParams) -> bool:
        """Whether the ``joint`` stages act jointly for ``params`` (SGLang: only while min_p is off)."""
        return bool(self.joint) and params.min_p == 0


_PENALTIES = ("min_tokens", *PENALTY_STAGES)
_OPENAI = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
           "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}  # fmt: skip

ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            "transformers",
            "5.23",
            "transformers generation/utils.py (_get_logits_processor), generation/configuration_utils.py",
            (*_PENALTIES, "temperature", "top_k", "top_p", "min_p"),
            {"max_new_tokens": 20, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": 0.0,
             "repetition_penalty": 1.0, "presence_penalty": None, "frequency_penalty": None},
            {"max_new_tokens": "max_new_tokens", "temperature": "temperature", "top_k": "top_k", "top_p": "top_p",
             "min_p": "min_p", "repetition_penalty": "repetition_penalty"},
            {"raw": "output_logits=True", "after temperature": "",
             "processed": "output_scores=True (every processor applied)"},
            config_sources=("generation_config.json",),
        ),
        Engine(
            "vllm",
            VLLM_VERSION,
            "vllm/v1/sample/sampler.py (Sampler), vllm/sampling_params.py, the OpenAI server's protocol.py",
            (*_PENALTIES, "temperature", "min_p", "top_k", "top_p"),
            {"max_new_tokens": 16, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
             "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0},
            {**_OPENAI, "max_new_tokens": "max_completion_tokens", "top_k": "top_k", "min_p": "min_p",
             "repetition_penalty": "repetition_penalty"},
            {"raw": "logprobs=N (the default --logprobs-mode raw_logprobs)", "after temperature": "",
             "processed": "--logprobs-mode processed_logprobs (server flag)"},
            config_sources=("generation_config.json",),
            min_temperature=0.01,
        ),
        Engine(
            "sglang",
            "main (2025)",
            "python/sglang/srt/layers/sampler.py (Sampler.forward), srt/sampling/penaltylib/repetition_penalty.py",
            (*_PENALTIES, "temperature", "top_k", "top_p", "min_p"),
            {"max_new_tokens": 128, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
             "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0},
            {**_OPENAI, "top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repetition_penalty"},
            {"raw": "SGLANG_RETURN_ORIGINAL_LOGPROB=1 (environment)", "after temperature":
             "return_logprob / logprobs=N (the default: log of the probabilities after temperature)",
             "processed": ""},
            joint=("top_k", "top_p"),
            prompt_in_window=False,
        ),
        Engine(
            "llama.cpp",
            "llama.cpp 0c1e570 (vendored by llama-cpp-python 0.3.36)",
            "common/common.h (common_params_sampling), src/llama-sampler.cpp, tools/server/server-context.cpp",
            (*_PENALTIES, "top_k", "top_p", "min_p", "temperature"),
            {"max_new_tokens": None, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
             "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0},
            {**_OPENAI, "top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repeat_penalty"},
            {"raw": "logprobs / n_probs=N (the default: softmax of the raw logits, server-context.cpp)",
             "after temperature": "", "processed": "post_sampling_probs=true (after the whole chain)"},
            penalty_window=64,
            config_sources=("GGUF general.sampling.*",),
        ),
        Engine(
            "llama-cpp-python",
            "0.3.36",
            "llama_cpp/llama.py (Llama._init_sampler, Llama.generate, logits_to_logprobs), llama_cpp/server/types.py",
            (*_PENALTIES, "top_k", "typical_p", "top_p", "min_p", "temperature"),
            {"max_new_tokens": None, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
             "repetition_penalty": 1.1, "presence_penalty": 0.0, "frequency_penalty": 0.0},
            {**_OPENAI, "top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repeat_penalty"},
            {"raw": "logprobs=True, top_logprobs=N (log-softmax of the model's logits; needs logits_all)",
             "after temperature": "", "processed": ""},
            penalty_window=64,
            prompt_in_window=False,
        ),
    )
}
"""The engines the lens knows, by name. llama-cpp-python's defaults are its OpenAI-compatible server's
(``llama_cpp/server/types.py``: repeat_penalty 1.1; its Python ``create_completion`` has 1.0 and max_tokens 16,
``create_chat_completion`` temperature 0.2)."""


def engine(name: str) -> Engine:
    """The Engine called ``name``; a ValueError listing the engines otherwise."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {name!r}")
    return ENGINES[name]


class JointFilter:
    r"""Cut-offs that all read the same scores: a token stays only where every filter keeps it.

    SGLang samples with flashinfer's ``top_k_top_p_sampling_from_probs(..., filter_apply_order="joint")`` when
    min_p is off: top_p's cumulative sum runs over the whole (post-temperature) distribution, not over the top_k
    survivors renormalised, so it keeps at least as many tokens as top_k then top_p. Written here because no
    library offers the combination; the filters themselves are transformers' processors.

    >>> from transformers import TopKLogitsWarper, TopPLogitsWarper
    >>> scores = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    >>> joint = JointFilter([TopKLogitsWarper(2), TopPLogitsWarper(0.5)])
    >>> [round(p, 3) for p in joint(None, scores).softmax(-1)[0].tolist()]
    [0.571, 0.429, 0.0, 0.0]
    >>> [round(p, 3) for p in TopPLogitsWarper(0.5)(None, TopKLogitsWarper(2)(None, scores)).softmax(-1)[0].tolist()]
    [1.0, 0.0, 0.0, 0.0]
    """

    def __init__(self, filters: Sequence[Any]):
        self.filters = list(filters)
        self.stage = "+".join(stage_name(f) for f in self.filters)

    def __call__(self, input_ids: Any, scores: torch.Tensor) -> torch.Tensor:
        keep = torch.ones_like(scores, dtype=torch.bool)
        for f in self.filters:
            keep &= f(input_ids, scores.clone()) > float("-inf")
        return scores.masked_fill(~keep, float("-inf"))


def penalty_history(dist: Distribution, eng: Engine) -> torch.Tensor:
    """The token ids ``eng``'s penalties count for the next token of ``dist`` (1, n)."""
    ids = dist.input_ids if eng.prompt_in_window else dist.input_ids[:, dist.prompt_length :]
    return ids if eng.penalty_window is None else ids[:, -eng.penalty_window :]


def _penalties(params: SamplingParams) -> list[Any]:
    """The penalty processors for ``params`` that count every id they are given (prompt_length 0)."""
    procs: list[Any] = []
    if params.repetition_penalty != 1:
        procs.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    return procs + list(to_transformers(params, prompt_length=0)[1])


def in_engine(dist: Distribution, name: str) -> Distribution:
    """The same next token as ``dist`` (same logits, same parameters) as engine ``name`` would sample it.

    ``stages`` come in that engine's order (SGLang's joint cut-off as one stage, "top_k+top_p"); the penalties
    count what that engine counts (see the module's table). transformers is ``dist`` itself; vLLM is
    ``dist.in_vllm_order()``. A parameter only one engine has (typical_p) is left at its neutral value.

    >>> ENGINES["llama.cpp"].order[-1], ENGINES["vllm"].order[-3:]
    ('temperature', ('min_p', 'top_k', 'top_p'))
    """
    eng = engine(name)
    if name == "transformers":
        return dist
    if name == "vllm":
        return dist.in_vllm_order()
    params = dist.params
    procs = [p for p in processors_for(dist.lm, params, dist.input_ids, dist.prompt_length)
             if stage_name(p) not in PENALTY_STAGES]  # fmt: skip
    history = penalty_history(dist, eng)
    if history.shape[1] > 0:
        procs += _penalties(params)
    order = list(eng.order)
    cut = [p for p in procs if stage_name(p) in eng.joint] if eng.is_joint(params) else []
    if len(cut) > 1:
        joint = JointFilter(cut)
        procs = [p for p in procs if stage_name(p) not in eng.joint] + [joint]
        order[order.index(eng.joint[0])] = joint.stage
    stage_ids = dict.fromkeys(PENALTY_STAGES, history)
    stages = apply_stages(dist.logits, dist.input_ids, procs, params.greedy, order=order, stage_ids=stage_ids)
    return Distribution(dist.lm, params, dist.logits, dist.input_ids, dist.prompt_length, *stages)


def received_params(body: Mapping[str, Any], name: str, base: SamplingParams | None = None) -> SamplingParams:
    """The parameters engine ``name``'s server samples with for a request ``body`` (a flat JSON dict, e.g.
    ``to_openai(params, http=True)``): every field it reads under its own name, its defaults for the rest.

    A field sent under a name the engine does not read is silently dropped: ``repetition_penalty`` (vLLM's name)
    reaches llama-cpp-python's server, which reads ``repeat_penalty``, as its default 1.1.

    >>> received_params({"temperature": 0.7, "repetition_penalty": 1.0}, "llama-cpp-python").repetition_penalty
    1.1
    """
    eng = engine(name)
    values = {}
    for field in SAMPLING_FIELDS:
        key = eng.request_names.get(field)
        value = body.get(key) if key else None
        if value is None:
            value = eng.defaults.get(field)
        if value is not None:
            values[field] = value
    if body.get("temperature") == 0:
        values["temperature"] = 0.0
    base = base or SamplingParams()
    return base.replace(**values)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Total variation distance between two probability vectors: half their L1 distance, in [0, 1]; the largest
    difference in probability the two give to any set of tokens.

    >>> total_variation(torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.5, 0.25]))
    0.25
    """
    return float((p.double() - q.double()).abs().sum() / 2)


GGUF_KEYS = {"temperature": "general.sampling.temp", "top_k": "general.sampling.top_k",
             "top_p": "general.sampling.top_p", "min_p": "general.sampling.min_p",
             "repetition_penalty": "general.sampling.penalty_repeat"}  # fmt: skip
"""The GGUF keys llama-server reads as defaults (``common/common.cpp``, ``llama_model_meta_key_str``)."""
YOU = "you"
ENGINE_DEFAULT = "engine default"


@dataclasses.dataclass(frozen=True)
class EngineExplanation:
    """What engine ``engine`` applies for a preset, value by value, and where each value came from.

    ``settings``: (field, value, source) with source one of "you" (the preset sets it: differs from the kit's
    defaults, so a request would carry it), "generation_config.json", "GGUF general.sampling.*" or "engine
    default". ``stages``: the active stages in the engine's order. ``gguf_keys``: the embedded GGUF's
    ``general.sampling.*`` keys (for the llama.cpp engines; empty: it carries none).
    """

    engine: Engine
    params: SamplingParams
    settings: tuple[tuple[str, Any, str], ...]
    stages: tuple[str, ...]
    gguf_keys: Mapping[str, Any] | None

    @property
    def received(self) -> SamplingParams:
        """The parameters the engine samples with: your values, then the model's or the engine's defaults."""
        values = {f: v for f, v, _ in self.settings if v is not None}
        return self.params.replace(**values)

    def __str__(self) -> str:
        e = self.engine
        lines = [f"What {e.name} ({e.version}) applies for {self.params!r}", f"  read from: {e.source}"]
        lines += [f"  {f}: {'no limit (until EOS or the context)' if v is None else v}  ({s})"
                  for f, v, s in self.settings]  # fmt: skip
        lines.append(f"stages, in {e.name}'s order: {', '.join(self.stages) or 'none'}")
        window = "all tokens" if e.penalty_window is None else f"the last {e.penalty_window} tokens"
        counted = "prompt and generated" if e.prompt_in_window else "generated only"
        lines.append(f"penalties count: {window}, {counted} (presence/frequency: generated only outside llama.cpp)")
        if self.gguf_keys is not None:
            keys = ", ".join(f"{k}={v}" for k, v in self.gguf_keys.items()) or "none"
            lines.append(f"the GGUF's general.sampling.* keys: {keys}")
        lines += [f"logprobs {kind}: {flag or 'not returned'}" for kind, flag in e.logprobs.items()]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def _source(field: str, params: SamplingParams, eng: Engine, config: Any, gguf: Mapping[str, Any]) -> tuple:
    """(value, source) of ``field`` for ``eng``: yours when the preset sets it, else the model's file, else the
    engine's default."""
    value = getattr(params, field)
    if value != getattr(SamplingParams, field):
        return value, YOU
    if "generation_config.json" in eng.config_sources and getattr(config, field, None) is not None:
        return getattr(config, field), "generation_config.json"
    if GGUF_KEYS.get(field) in gguf:
        return gguf[GGUF_KEYS[field]], "GGUF general.sampling.*"
    return eng.defaults.get(field), ENGINE_DEFAULT


def gguf_sampling_keys(path: str | Path | None = None) -> dict[str, Any]:
    """The ``general.sampling.*`` keys of a GGUF (the embedded one by default): the defaults newer llama.cpp
    (llama-server, ``common/common.cpp``) takes from the file itself. Empty when the file carries none."""
    import gguf

    reader = gguf.GGUFReader(str(path or embedded_gguf_path()))
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("general.sampling.")}


def explain_engine(params: SamplingParams, lm: Any, name: str) -> EngineExplanation:
    """What engine ``name`` applies for ``params`` on ``lm`` when a request carries only the fields the preset
    sets (see ``EngineExplanation``). ``explain(params, lm, engine=name)`` returns this."""
    eng = engine(name)
    gguf = gguf_sampling_keys() if eng.name.startswith("llama") and lm.name == "embedded" else None
    config = lm.model.generation_config
    settings = tuple((f, *_source(f, params, eng, config, gguf or {})) for f in SAMPLING_FIELDS)
    shown = EngineExplanation(eng, params, settings, (), gguf)
    received = shown.received
    active = {"temperature": not received.greedy and received.temperature != 1, "top_k": received.top_k > 0,
              "top_p": received.top_p < 1, "min_p": received.min_p > 0}  # fmt: skip
    active |= {f: getattr(received, f) != getattr(SamplingParams, f) for f in PENALTY_STAGES}
    stages = [s for s in eng.order if active.get(s)]
    if eng.is_joint(received) and {"top_k", "top_p"} <= set(stages):
        stages = [("top_k+top_p" if s == "top_k" else s) for s in stages if s != "top_p"]
    return dataclasses.replace(shown, stages=tuple(stages))


def _log(probs: torch.Tensor) -> torch.Tensor:
    return probs.double().log()


def logprob_lens(dist: Distribution, name: str = "vllm", n: int = 8) -> list[dict[str, Any]]:
    """One step's log-probabilities three ways, for the ``n`` most likely tokens of the model: "raw" (log-softmax
    of the logits), "after temperature" (after the penalties and the temperature, before any cut-off) and
    "processed" (of engine ``name``'s final distribution: -inf for a token it can no longer draw). Which of them an
    engine returns, and under which flag, is ``ENGINES[name].logprobs`` (``logprob_flags``).

    The three differ exactly as the stages do: temperature shifts every value, the cut-offs send the removed tokens
    to -inf and raise the kept ones (renormalised over fewer tokens).
    """
    final = in_engine(dist, name).probs
    shaping = [s for s in dist.stages if s in (*PENALTY_STAGES, "temperature")]
    raw, warm = dist.stage("raw"), dist.stage(shaping[-1] if shaping else "raw")
    top = torch.topk(raw, n).indices.tolist()
    texts = dist.lm.token_texts(top)
    return [
        {"token": t, "raw": float(_log(raw)[i]), "after temperature": float(_log(warm)[i]),
         f"processed ({name})": float(_log(final)[i])}
        for t, i in zip(texts, top, strict=True)
    ]  # fmt: skip


def logprob_flags() -> list[dict[str, str]]:
    """For each engine, the flag (or setting) that returns raw, after-temperature and processed logprobs."""
    return [{"engine": e.name, **{k: v or "-" for k, v in e.logprobs.items()}} for e in ENGINES.values()]


def engine_rows(dist: Distribution, n: int = 3) -> list[dict[str, Any]]:
    """For each engine, what it makes of ``dist``'s logits and parameters: its stage order, how many tokens it can
    draw, the entropy (bits), the distance from transformers' distribution and its ``n`` likeliest tokens."""
    rows = []
    for name in ENGINES:
        ours = in_engine(dist, name)
        stages = [s for s in ours.stages if s not in ("raw", "final")]
        rows.append({"engine": name, "order": ", ".join(stages) or "-", "tokens": ours.surviving(),
                     "entropy": round(ours.entropy, 2), "TV vs transformers": round(total_variation(ours.probs,
                     dist.probs), 3), "top": ", ".join(t.token for t in ours.top(n))})  # fmt: skip
    return rows


def defaults_rows(params: SamplingParams, lm: Any) -> list[dict[str, Any]]:
    """For each engine, the value it applies for each field the preset leaves at the kit's default, where a
    request carrying only the preset's own fields leaves the engine to choose (``explain_engine``)."""
    rows = []
    for name in ENGINES:
        shown = explain_engine(params, lm, name)
        row: dict[str, Any] = {"engine": name}
        row |= {f: ("-" if v is None else v) for f, v, s in shown.settings if s != YOU}
        rows.append(row)
    return rows
