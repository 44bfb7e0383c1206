"""Take a preset to a serving stack: vLLM's ``SamplingParams`` or an OpenAI-style chat-completions request.

Every stack names the same ideas differently:

=====================  ==========================  =============================  ===============================
smolkit (vLLM names)   transformers                vLLM ``SamplingParams``        OpenAI chat completions
=====================  ==========================  =============================  ===============================
max_new_tokens         max_new_tokens              max_tokens                     max_completion_tokens
temperature=0          do_sample=False             temperature=0                  temperature=0
top_k=0 (all)          top_k=0 (unset means 50!)   left out (0 from v0.9.0)       vLLM's extension: left out
min_p                  min_p, after top_p          min_p, before top_k / top_p    vLLM's extension: min_p
presence/frequency     smolkit's processors        presence/frequency_penalty     presence/frequency_penalty
repetition_penalty     repetition_penalty          repetition_penalty             vLLM's extension
min_tokens             min_new_tokens              min_tokens                     vLLM's extension
stop_token_ids         added to eos_token_id       stop_token_ids                 vLLM's extension
seed                   torch.manual_seed           seed                           seed (signed 64-bit)
n                      (batch of n)                n                              n
=====================  ==========================  =============================  ===============================

A field a request leaves unset is filled from somewhere else: in transformers from the model's
generation_config.json and then the library's defaults (top_k=50), in a vLLM server from the same file
(``--generation-config auto``, its default). The exports therefore set every sampling field explicitly, except
top_k when it is off: vLLM spells "off" 0 only from v0.9.0 (vllm-project/vllm PR #17773, May 2025; -1 is still
accepted), and v0.8.5 and older reject 0 with HTTP 400 ("top_k must be -1 (disable), or at least 1, got 0", issue
#17553), so leaving it out is the one spelling every release reads as "all tokens" (unless the model's
generation_config.json sets a top_k: SmolLM2's sets none). The same seed never gives the same samples on two
stacks: their random streams differ (the draws themselves are alike: ``torch.multinomial`` with one sample and
vLLM's sampler both pick argmax(p / q) with exponential noise q).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from smolkit import _checks
from smolkit.hf import hidden_stages
from smolkit.params import SamplingParams
from smolkit.vllm_rules import MAX_TEMPERATURE, MIN_TEMPERATURE, OPENAI_MAX_SEED, OPENAI_MAX_STOP, VERSION

__all__ = ["DEFAULT_MODEL_ID", "VLLM_EXTENSIONS", "ExportWarning", "model_id", "to_openai", "to_vllm"]

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub id of the embedded model, used in exports and snippets by default."""

VLLM_EXTENSIONS = ("top_k", "min_p", "repetition_penalty", "min_tokens", "stop_token_ids")
"""Request fields a vLLM server reads that the OpenAI API lacks."""


class ExportWarning(UserWarning):
    """A value that reaches the target changed, or not at all (filter with ``warnings.simplefilter``)."""


def warn(message: str, stacklevel: int = 3) -> None:
    """An ExportWarning pointing at the caller of the public function that calls this (``stacklevel`` frames up)."""
    warnings.warn(message, ExportWarning, stacklevel=stacklevel)


def check_params(params: Any) -> SamplingParams:
    if not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a smolkit.SamplingParams, got {type(params).__name__}")
    return params


def warn_hidden_stages(lm: Any, target: str, stacklevel: int = 4) -> None:
    """An ExportWarning naming the stages ``lm``'s own generation config adds (generate applies them) that
    ``target`` cannot carry: the export would sample from another distribution than the kit showed."""
    config = getattr(getattr(lm, "model", None), "generation_config", None)
    hidden = hidden_stages(config) if lm is not None else []
    if hidden:
        warn(
            f"{', '.join(hidden)}: {model_id(lm)!r}'s generation_config.json adds this stage to every generate call "
            f"(smolkit and transformers apply it, explain shows it), but {target} cannot carry it, so the export "
            "samples from another distribution than smolkit showed",
            stacklevel=stacklevel,
        )


def model_id(lm: Any) -> str:
    """The name a serving stack knows ``lm`` by: the Hub id for the embedded model, else the name it was loaded as."""
    name = getattr(lm, "name", lm)
    return DEFAULT_MODEL_ID if name == "embedded" else str(name)


def _temperature(params: SamplingParams, target: str, stacklevel: int = 4) -> float:
    """The temperature a vLLM / OpenAI request needs: 0 for greedy (they have no do_sample), else checked."""
    if params.greedy:
        return 0.0
    if params.temperature > MAX_TEMPERATURE:
        raise ValueError(
            f"temperature={params.temperature:g} cannot be exported to {target}: vLLM (>= {VERSION}) and the "
            f"OpenAI API accept temperature in [0, {MAX_TEMPERATURE:g}]"
        )
    if params.temperature < MIN_TEMPERATURE:
        warn(
            f"temperature={params.temperature:g}: vLLM raises temperatures in (0, {MIN_TEMPERATURE:g}) to "
            f"{MIN_TEMPERATURE:g}, so it samples a little more broadly than smolkit shows",
            stacklevel=stacklevel,
        )
    return params.temperature


def _check_n(params: SamplingParams, target: str) -> None:
    if params.greedy and params.n > 1:
        raise ValueError(
            f"n={params.n} with greedy decoding cannot be exported to {target}: vLLM rejects n > 1 when temperature "
            "is 0 (every continuation would be the same); use n=1, or sample with a temperature"
        )


def to_vllm(params: SamplingParams, as_object: bool = False, lm: Any = None) -> Any:
    """Keyword arguments for vLLM's ``SamplingParams`` that sample what smolkit shows (vLLM 0.24's names).

    Greedy decoding (do_sample=False or temperature 0) becomes ``temperature=0``, as vLLM has no do_sample (it
    then ignores top_p, top_k and min_p itself). top_k "all tokens" (0) is left out: vLLM's default is "off" in
    every release, while the value 0 is accepted only from v0.9.0 (0.8.5 and older reject it: module docstring).
    ``as_object=True`` returns ``vllm.SamplingParams(**kwargs)`` and needs vllm.

    Raises ValueError, naming the field, for what vLLM cannot hold: temperature above 2 (rejected since v0.24, as by
    the OpenAI API) and n > 1 with greedy decoding. Warns (ExportWarning) when vLLM will change a value:
    temperatures in (0, 0.01) are raised to 0.01; and, given the loaded model ``lm`` the preset was explored on,
    for stages its generation config adds that vLLM cannot carry (``suppress_tokens``, ...).

    >>> to_vllm(SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=32))
    ... # doctest: +NORMALIZE_WHITESPACE
    {'n': 1, 'presence_penalty': 0.0, 'frequency_penalty': 0.0, 'repetition_penalty': 1.0, 'temperature': 0.7,
     'top_p': 0.9, 'min_p': 0.0, 'seed': None, 'stop_token_ids': [], 'max_tokens': 32, 'min_tokens': 0}
    """
    check_params(params)
    as_object = _checks.boolean("as_object", as_object)
    _check_n(params, "vLLM")
    warn_hidden_stages(lm, "vLLM")
    kwargs = {
        "n": params.n,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "repetition_penalty": params.repetition_penalty,
        "temperature": _temperature(params, "vLLM"),
        "top_p": params.top_p,
        **_top_k(params),
        "min_p": params.min_p,
        "seed": params.seed,
        "stop_token_ids": list(params.stop_token_ids),
        "max_tokens": params.max_new_tokens,
        "min_tokens": params.min_tokens,
    }
    if not as_object:
        return kwargs
    try:
        import vllm
    except ImportError:
        raise ImportError(
            "to_vllm(as_object=True) needs vLLM (pip install vllm, on a machine with a supported GPU); "
            "to_vllm() gives the same settings as a dict"
        ) from None
    return vllm.SamplingParams(**kwargs)


def _top_k(params: SamplingParams) -> dict[str, int]:
    """``{"top_k": k}`` when top_k is on, else nothing: 0 ("off") is rejected by vLLM 0.8.5 and older.

    >>> _top_k(SamplingParams(top_k=40)), _top_k(SamplingParams())
    ({'top_k': 40}, {})
    """
    return {"top_k": params.top_k} if params.top_k > 0 else {}


def _stop_strings(params: SamplingParams, tokenizer: Any) -> list[str]:
    """The text of each stop token, for APIs that stop on strings; tokens without clean text are left out."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a LoadedModel or a tokenizer
    texts, lost = [], []
    for token_id in params.stop_token_ids:
        text = tok.decode([token_id])
        (lost if not text or "\ufffd" in text else texts).append(text if text else token_id)
    if len(texts) > OPENAI_MAX_STOP:
        lost.extend(texts[OPENAI_MAX_STOP:])
        texts = texts[:OPENAI_MAX_STOP]
    if lost:
        warn(
            f"stop: {lost} are not sent as stop strings (no clean text, or more than {OPENAI_MAX_STOP}); "
            "stop_token_ids still stops a vLLM server there",
            stacklevel=4,
        )
    return texts


def to_openai(
    params: SamplingParams,
    model: str = DEFAULT_MODEL_ID,
    messages: Sequence[Mapping[str, Any]] | None = None,
    tokenizer: Any = None,
    http: bool = False,
    lm: Any = None,
) -> dict[str, Any]:
    """A chat-completions request with this preset, for a vLLM server (or any OpenAI-style endpoint).

    ``http=False``: keyword arguments for the OpenAI Python client, ``client.chat.completions.create(**body)``;
    vLLM's extensions (top_k, min_p, repetition_penalty, min_tokens, stop_token_ids) go in ``extra_body``, an
    argument of the client that it merges into the JSON it posts. ``http=True``: that JSON itself, the flat body to
    POST to ``/v1/chat/completions`` (a server never reads a key called ``extra_body``: posted raw, it would
    silently lose every extension). What the OpenAI API has goes in the body either way: temperature (0 for
    greedy), top_p, max_completion_tokens, presence_penalty, frequency_penalty, n, seed (when set) and, given a
    ``tokenizer`` (or LoadedModel), ``stop``: the text of each stop token. Every sampling field is sent, because a
    vLLM server fills fields a request leaves out from the model's generation_config.json.

    Warns (ExportWarning) listing the extensions that change sampling: a plain OpenAI endpoint does not apply them
    (OpenAI's own API rejects unknown fields); and, given ``lm``, as ``to_vllm`` does. Raises ValueError, naming
    the field, for temperature above 2 and
    seeds beyond a signed 64-bit integer.

    >>> body = to_openai(SamplingParams(temperature=0.7, seed=1, top_k=40), model="smollm2")
    >>> body["temperature"], body["seed"], body["extra_body"]["top_k"]
    (0.7, 1, 40)
    >>> "top_k" in to_openai(SamplingParams(temperature=0.7, seed=1), model="smollm2", http=True)
    False
    """
    check_params(params)
    http = _checks.boolean("http", http)
    _check_n(params, "an OpenAI-style request")
    warn_hidden_stages(lm, "an OpenAI-style request")
    body = {**_openai_head(model, messages), **_openai_sampling(params)}
    if tokenizer is not None and params.stop_token_ids:
        stops = _stop_strings(params, tokenizer)
        if stops:
            body["stop"] = stops
    extra = {name: getattr(params, name) for name in VLLM_EXTENSIONS if name != "top_k"}
    extra = {**_top_k(params), **extra, "stop_token_ids": list(params.stop_token_ids)}
    _warn_extensions(params)
    return {**body, **extra} if http else {**body, "extra_body": extra}


def _openai_head(model: Any, messages: Any) -> dict[str, Any]:
    """The request's model and (when given) messages, checked."""
    if not isinstance(model, str):
        raise TypeError(f"model must be the served model's name, e.g. {DEFAULT_MODEL_ID!r}, got {model!r}")
    model = _checks.text("model", model)
    if not model.strip():
        raise ValueError(f"model must be the served model's name, e.g. {DEFAULT_MODEL_ID!r}, got {model!r}")
    if messages is None:
        return {"model": model}
    if isinstance(messages, (str, bytes, Mapping)):
        raise TypeError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {messages!r}")
    messages = _checks.json_data("messages", messages)
    if not all(isinstance(m, dict) for m in messages):
        raise TypeError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {messages!r}")
    return {"model": model, "messages": messages}


def _openai_sampling(params: SamplingParams) -> dict[str, Any]:
    """The sampling fields the OpenAI API itself has."""
    body = {
        "temperature": _temperature(params, "an OpenAI-style request", stacklevel=5),
        "top_p": params.top_p,
        "max_completion_tokens": params.max_new_tokens,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "n": params.n,
    }
    if params.seed is not None:
        if params.seed > OPENAI_MAX_SEED:
            raise ValueError(
                f"seed={params.seed} cannot be sent in an OpenAI-style request: the API (and vLLM's server) take a "
                f"signed 64-bit seed, at most 2**63 - 1"
            )
        body["seed"] = params.seed
    return body


def _warn_extensions(params: SamplingParams) -> None:
    """Warn about the vLLM extensions that change what is sampled: a plain OpenAI endpoint ignores them."""
    effective = {
        "top_k": params.top_k > 0 and not params.greedy,
        "min_p": params.min_p > 0 and not params.greedy,
        "repetition_penalty": params.repetition_penalty != 1,
        "min_tokens": params.min_tokens > 0,
        "stop_token_ids": bool(params.stop_token_ids),
    }
    lost = [f"{name}={getattr(params, name)!r}" for name, on in effective.items() if on]
    if lost:
        warn(
            f"a plain OpenAI endpoint does not apply vLLM's extensions ({', '.join(lost)}): only vLLM-compatible "
            "servers do; OpenAI's own API rejects unknown fields",
            stacklevel=4,
        )
