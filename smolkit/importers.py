"""Presets from elsewhere: the SamplingParams a transformers GenerationConfig, a model's own generation_config.json
or an OpenAI-style request body stands for (the exports' inverses).

Each reader is a table of fields (what crosses, under which name, what is refused because it would sample from
another distribution) and a short loop over it; every value read is checked as it crosses.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from transformers import GenerationConfig

from smolkit import _checks
from smolkit.export import warn
from smolkit.hf import NEUTRAL, UNSUPPORTED_GENERATION_FIELDS, library_defaults
from smolkit.params import SamplingParams
from smolkit.processors import FrequencyPenaltyLogitsProcessor, PresencePenaltyLogitsProcessor
from smolkit.vllm_rules import SERVER_GENERATION_CONFIG_FIELDS

__all__ = ["as_generation_config", "equivalent", "from_generation_config", "from_model_defaults", "from_openai"]

# -- GenerationConfig ----------------------------------------------------------------------------------------------

GENERATION_FIELDS = {
    "max_new_tokens": "max_new_tokens",
    "min_new_tokens": "min_tokens",
    "repetition_penalty": "repetition_penalty",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "num_return_sequences": "n",
}
"""GenerationConfig field -> SamplingParams field, for what crosses as it is."""

SAMPLING_ONLY = ("temperature", "top_p", "top_k", "min_p")
"""Fields transformers applies only when sampling (do_sample=True)."""

STOP_ONLY_FIELDS = ("stop_strings", "max_time")
"""Fields that change only where generation stops: not imported, with a warning."""

CONFIG_TYPES = {
    "do_sample": _checks.boolean,
    "max_new_tokens": _checks.integer,
    "min_new_tokens": _checks.integer,
    "max_length": _checks.integer,
    "num_return_sequences": _checks.integer,
    "top_k": _checks.integer,
    "temperature": _checks.number,
    "top_p": _checks.number,
    "min_p": _checks.number,
    "repetition_penalty": _checks.number,
}
"""How each field the kit reads must be typed (a dict from JSON can hold "false" for do_sample)."""


def as_generation_config(gc: Any, name: str = "gc") -> GenerationConfig:
    """``gc`` (a GenerationConfig or a dict of its fields) as a GenerationConfig whose fields the kit reads are of
    the right type: {"do_sample": "false"} must not turn sampling on, {"eos_token_id": "12"} is no token id."""
    if isinstance(gc, Mapping):  # checked before transformers reads it (its own checks compare values)
        fields = dict(gc)
        for field, check in CONFIG_TYPES.items():
            if fields.get(field) is not None:
                fields[field] = check(f"{name}.{field}", fields[field])
        if fields.get("eos_token_id") is not None:
            fields["eos_token_id"] = ids(f"{name}.eos_token_id", fields["eos_token_id"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # transformers' notes about flag combinations
            gc = GenerationConfig.from_dict(fields)
    if not isinstance(gc, GenerationConfig):
        raise TypeError(
            f"{name} must be a transformers GenerationConfig or a dict of its fields, got {type(gc).__name__}"
        )
    for field, check in CONFIG_TYPES.items():
        if getattr(gc, field, None) is not None:
            check(f"{name}.{field}", getattr(gc, field))
    if gc.eos_token_id is not None:
        ids(f"{name}.eos_token_id", gc.eos_token_id)
    return gc


def ids(name: str, value: Any) -> list[int]:
    """One id or a list of ids (as generation configs write eos_token_id) as a list of checked ints."""
    value = _checks.plain(value)
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        value = [value]
    return list(_checks.token_ids(name, value))


def _is_neutral(name: str, value: Any, defaults: Mapping[str, Any]) -> bool:
    if value is None or value == UNSUPPORTED_GENERATION_FIELDS.get(name, NEUTRAL.get(name)):
        return True
    return name in defaults and value == defaults[name]


def from_generation_config(
    gc: GenerationConfig | Mapping[str, Any],
    logits_processor: Sequence[Any] | None = None,
    *,
    eos_token_id: int | Sequence[int] | None = None,
    defaults: Literal["transformers", "vllm"] = "transformers",
) -> SamplingParams:
    """The preset a transformers GenerationConfig (plus smolkit's processors, if any) stands for.

    ``eos_token_id`` is the model's own end-of-sequence id(s): the config's other eos ids become stop_token_ids
    (as ``to_transformers`` adds them); without it every eos id counts as the model's own. ``defaults`` says how to
    read fields the config leaves unset: "transformers" as ``model.generate`` does (do_sample off, and top_k=50
    when sampling, with an ExportWarning), "vllm" as a vLLM server reads a generation_config.json (it ignores
    do_sample and takes only temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens; unset means
    vLLM's neutral defaults).

    Raises ValueError listing every field that would change what is sampled but cannot cross (beam search,
    typical_p, epsilon/eta cut-offs, no_repeat_ngram_size, ...) and any processor other than smolkit's presence
    and frequency penalties; with defaults="vllm" those fields only warn, because vLLM ignores them. Warns for what
    only changes where generation stops (max_length without max_new_tokens, stop_strings, max_time).

    >>> from_generation_config(GenerationConfig(do_sample=True, temperature=0.7, top_k=0, max_new_tokens=20))
    SamplingParams(max_new_tokens=20, temperature=0.7)
    """
    vllm_mode = _checks.choice("defaults", defaults, ("transformers", "vllm")) == "vllm"
    gc = as_generation_config(gc)
    lib = library_defaults()
    _refuse_unsupported(gc, lib, vllm_mode)
    _warn_stop_only(gc)
    fields = _vllm_reading(gc) if vllm_mode else _transformers_reading(gc, lib)
    model_eos = ids("eos_token_id", eos_token_id) if eos_token_id is not None else ids("eos_token_id", gc.eos_token_id)
    stops = [t for t in ids("gc.eos_token_id", gc.eos_token_id) if t not in model_eos]
    if stops:
        fields["stop_token_ids"] = stops
    fields.update(_penalties_of(logits_processor or ()))
    return SamplingParams(**fields)


def _refuse_unsupported(gc: GenerationConfig, lib: Mapping[str, Any], vllm_mode: bool) -> None:
    bad = [
        f"{name}={getattr(gc, name, None)!r}"
        for name in UNSUPPORTED_GENERATION_FIELDS
        if not _is_neutral(name, getattr(gc, name, None), lib)
    ]
    if bad and vllm_mode:
        warn(f"a vLLM server ignores these generation_config fields: {', '.join(bad)}", stacklevel=4)
    elif bad:
        beams = any(b.startswith("num_beams") for b in bad)
        raise ValueError(
            f"cannot import {', '.join(bad)}: SamplingParams (smolkit's, like vLLM's) has no equivalent, so the "
            "preset would sample from another distribution than this GenerationConfig"
            + (" (vLLM runs beam search outside SamplingParams, with LLM.beam_search)" if beams else "")
        )


def _warn_stop_only(gc: GenerationConfig) -> None:
    if gc.max_new_tokens is None and gc.max_length is not None:
        warn(
            f"max_length={gc.max_length} counts the prompt too; smolkit's max_new_tokens counts only new tokens, "
            f"so the preset keeps max_new_tokens={SamplingParams.max_new_tokens}",
            stacklevel=4,
        )
    for name in STOP_ONLY_FIELDS:
        if getattr(gc, name, None) is not None:
            warn(f"{name}={getattr(gc, name)!r} is not imported: smolkit stops only at EOS, stop ids and length", 4)


def _transformers_reading(gc: GenerationConfig, lib: Mapping[str, Any]) -> dict[str, Any]:
    """The fields as ``model.generate`` reads them: unset sampling fields take the library's defaults."""
    sampling = bool(gc.do_sample if gc.do_sample is not None else lib.get("do_sample", False))
    fields: dict[str, Any] = {"do_sample": sampling}
    for gc_name, name in GENERATION_FIELDS.items():
        value = getattr(gc, gc_name)
        if value is None and sampling and gc_name in ("temperature", "top_p", "top_k"):
            value = lib.get(gc_name)
            if gc_name == "top_k" and value:
                warn(
                    f"top_k is unset: transformers' generate applies its default top_k={value}, so the preset "
                    "keeps it (defaults='vllm' reads the config as vLLM does: all tokens)",
                    stacklevel=4,
                )
        if value is not None and not (gc_name == "min_p" and not sampling):
            fields[name] = value  # greedy: temperature, top_p, top_k are kept as the config says (not applied)
    return fields


def _vllm_reading(gc: GenerationConfig) -> dict[str, Any]:
    """The fields as a vLLM server reads a generation_config.json: only its few fields; no do_sample."""
    if gc.do_sample is False:
        warn("do_sample=False is ignored by vLLM (it has no do_sample): it samples unless temperature is 0", 4)
    fields = {}
    for gc_name in SERVER_GENERATION_CONFIG_FIELDS:
        if getattr(gc, gc_name, None) is not None:
            fields[GENERATION_FIELDS[gc_name]] = getattr(gc, gc_name)
    if gc.num_return_sequences is not None:
        fields["n"] = gc.num_return_sequences
    return fields


def _penalties_of(processors: Sequence[Any]) -> dict[str, float]:
    fields = {}
    for proc in processors:
        if isinstance(proc, PresencePenaltyLogitsProcessor):
            fields["presence_penalty"] = proc.value
        elif isinstance(proc, FrequencyPenaltyLogitsProcessor):
            fields["frequency_penalty"] = proc.value
        else:
            raise ValueError(
                f"logits_processor: cannot import {type(proc).__name__}: only smolkit's "
                "PresencePenaltyLogitsProcessor and FrequencyPenaltyLogitsProcessor have a SamplingParams field"
            )
    return fields


def from_model_defaults(source: Any, defaults: Literal["transformers", "vllm"] = "transformers") -> SamplingParams:
    """The preset a model's own generation_config.json stands for (see ``from_generation_config``).

    ``source``: a LoadedModel, a transformers model, a GenerationConfig, a folder with a generation_config.json,
    or a Hub id (read from the Hugging Face cache, or downloaded: that is asking for the network). The model's eos
    ids stay its own (no stop_token_ids). With ``defaults="transformers"`` this is what a plain
    ``model.generate(**inputs)`` does; with "vllm" what ``vllm serve`` does by default: often not the same.
    """
    gc = _source_generation_config(source)
    return from_generation_config(gc, eos_token_id=ids("eos_token_id", gc.eos_token_id), defaults=defaults)


def _source_generation_config(source: Any) -> GenerationConfig:
    if isinstance(source, GenerationConfig):
        return source
    model = getattr(source, "model", source)  # a LoadedModel holds the transformers model
    if isinstance(getattr(model, "generation_config", None), GenerationConfig):
        return model.generation_config
    if isinstance(source, (str, os.PathLike)):
        return GenerationConfig.from_pretrained(str(source))
    raise TypeError(
        "source must be a LoadedModel, a transformers model, a GenerationConfig, a folder or a Hub id, "
        f"got {type(source).__name__}"
    )


# -- OpenAI-style request bodies ------------------------------------------------------------------------------------

OPENAI_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "n": "n",
    "seed": "seed",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "min_tokens": "min_tokens",
    "stop_token_ids": "stop_token_ids",
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",  # the newer name: it wins when both are set (from_openai)
}
"""Request field -> SamplingParams field (vLLM's extensions included)."""

OPENAI_PASSIVE = frozenset(
    [
        "model",
        "messages",
        "stream",
        "stream_options",
        "user",
        "logprobs",
        "top_logprobs",
        "store",
        "metadata",
        "service_tier",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "include_stop_str_in_output",
        "echo",
        "add_generation_prompt",
        "chat_template",
        "chat_template_kwargs",
        "request_id",
        "prompt_logprobs",
        "return_token_ids",
    ]
)
"""Request fields that do not change what is sampled (read past without a word)."""

OPENAI_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
    "structured_outputs": (None,),
    "guided_json": (None,),
    "guided_regex": (None,),
    "guided_choice": (None,),
    "guided_grammar": (None,),
    "logits_processors": (None, []),
    "best_of": (None, 1),
    "bad_words": (None, []),
    "allowed_token_ids": (None,),
    "use_beam_search": (None, False),
    "length_penalty": (None, 1.0),
    "ignore_eos": (None, False),
    "typical_p": (None, 1.0),
    "logprob_token_ids": (None,),
}
"""Fields that change what is sampled (or when it stops) and have no SamplingParams field, with their neutral
values: anything else raises."""


def from_openai(
    body: Mapping[str, Any],
    tokenizer: Any = None,
    defaults: SamplingParams | None = None,
) -> SamplingParams:
    """The preset an OpenAI chat-completions request body stands for (``to_openai``'s inverse).

    Reads the top level and ``extra_body`` (or vLLM's extensions merged into the top level, as raw HTTP sends
    them), so ``from_openai(smolkit.to_vllm(params))`` works too (``max_tokens``). ``None`` means unset; unset
    fields take ``defaults`` when given (pass ``from_model_defaults(lm, defaults="vllm")`` to read the request as a
    vLLM server for that model would), else smolkit's defaults, which are vLLM's and OpenAI's (except
    max_new_tokens=64: the API's is "until the context ends"). seed -1 means no seed (vLLM).

    ``stop`` strings: with a ``tokenizer`` (or LoadedModel), those that are exactly one token become stop ids;
    the others cannot cross (smolkit stops on token ids) and an ExportWarning lists them. Raises ValueError naming
    the fields that change sampling but have no smolkit equivalent (logit_bias, response_format, guided_json,
    best_of, ...); warns for fields it does not know.

    >>> from_openai({"model": "m", "temperature": 0.2, "extra_body": {"top_k": 40}})
    SamplingParams(temperature=0.2, top_k=40)
    """
    merged = _merged_body(body)
    bad = [f"{k}={merged[k]!r}" for k, neutral in OPENAI_NEUTRAL.items() if k in merged and merged[k] not in neutral]
    if bad:
        raise ValueError(f"cannot import {', '.join(bad)}: smolkit has no equivalent, so it would sample otherwise")
    unknown = sorted(set(merged) - set(OPENAI_FIELDS) - {"stop"} - OPENAI_PASSIVE - set(OPENAI_NEUTRAL))
    if unknown:
        warn(f"not imported (not sampling parameters smolkit knows): {_checks.listing(unknown)}")
    fields = {OPENAI_FIELDS[k]: v for k, v in merged.items() if k in OPENAI_FIELDS and v is not None}
    if merged.get("max_completion_tokens") is not None:  # OpenAI's newer name for max_tokens wins over it
        fields["max_new_tokens"] = merged["max_completion_tokens"]
    if fields.get("seed") == -1:
        del fields["seed"]
    stop_ids = [*fields.pop("stop_token_ids", ()), *_stop_ids(merged.get("stop"), tokenizer)]
    if stop_ids:
        fields["stop_token_ids"] = stop_ids
    base = defaults if defaults is not None else SamplingParams()
    if not isinstance(base, SamplingParams):
        raise TypeError(f"defaults must be a smolkit.SamplingParams or None, got {type(base).__name__}")
    return base.replace(**fields)


def _merged_body(body: Any) -> dict[str, Any]:
    """The request's fields with ``extra_body``'s merged in, as the OpenAI client sends them."""
    if not isinstance(body, Mapping):
        raise TypeError(f"body must be a dict (the request's JSON), got {type(body).__name__}")
    body = _checks.json_data("body", body)  # numpy values as Python ones; what JSON cannot hold is refused
    extra = body.pop("extra_body", None) or {}
    if not isinstance(extra, Mapping):
        raise TypeError(f"extra_body must be a dict, got {type(extra).__name__}")
    return {**body, **extra}


def _stop_ids(stop: Any, tokenizer: Any) -> list[int]:
    """The stop strings that are exactly one token, as ids; a warning lists the others."""
    if stop is None or stop == []:
        return []
    strings = [stop] if isinstance(stop, str) else stop
    if not isinstance(strings, Sequence) or not all(isinstance(s, str) for s in strings):
        raise TypeError(f"stop must be a string or a list of strings, got {_checks.describe(stop)}")
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    found, lost = [], []
    for text in strings:
        token = tok(text, add_special_tokens=False)["input_ids"] if tok is not None else []
        (found.append(int(token[0])) if len(token) == 1 else lost.append(text))
    if lost:
        reason = "pass tokenizer= to map single-token strings" if tok is None else "not one token each"
        shown = _checks.listing([_checks.describe(t, 40) for t in lost])
        warn(f"stop strings [{shown}] are not imported: smolkit stops on token ids ({reason})", stacklevel=4)
    return found


def equivalent(a: SamplingParams, b: SamplingParams) -> bool:
    """True when two presets sample alike: equal, except what greedy decoding ignores (do_sample vs temperature 0,
    top_p, top_k, min_p).

    >>> equivalent(SamplingParams(do_sample=False, top_p=0.5), SamplingParams(temperature=0))
    True
    """
    return _canonical(a) == _canonical(b)


def _canonical(p: SamplingParams) -> SamplingParams:
    return p.replace(do_sample=False, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0) if p.greedy else p
