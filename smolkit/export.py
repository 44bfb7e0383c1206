"""Take a preset to a real serving stack: export it to transformers, vLLM or an OpenAI-style API, import it back,
and explain what generate will actually run.

Every stack names and orders the same ideas differently:

=====================  ==========================  =============================  ===============================
smolkit (vLLM names)   transformers                vLLM ``SamplingParams``        OpenAI chat completions
=====================  ==========================  =============================  ===============================
max_new_tokens         max_new_tokens              max_tokens                     max_completion_tokens
temperature=0          do_sample=False             temperature=0                  temperature=0
top_k=-1 (all)         top_k=0 (unset means 50!)   top_k=-1 (or 0 since v0.9)     extra_body top_k (vLLM only)
min_p                  min_p, after top_p          min_p, before top_k / top_p    extra_body min_p (vLLM only)
presence/frequency     smolkit's processors        presence/frequency_penalty     presence/frequency_penalty
repetition_penalty     repetition_penalty          repetition_penalty             extra_body (vLLM only)
min_tokens             min_new_tokens              min_tokens                     extra_body (vLLM only)
stop_token_ids         added to eos_token_id       stop_token_ids                 extra_body (vLLM only)
seed                   torch.manual_seed           seed                           seed (signed 64-bit)
n                      (batch of n)                n                              n
=====================  ==========================  =============================  ===============================

A field a request leaves unset is filled from somewhere else: in transformers from the model's
generation_config.json and then the library's defaults (top_k=50), in a vLLM server from the same file
(``--generation-config auto``, its default). The exports therefore set every sampling field explicitly.
``explain(params, lm)`` shows what runs and where each value came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import textwrap
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from transformers import GenerationConfig, LogitsProcessorList

from smolkit.distribution import Distribution, stage_name
from smolkit.params import _NEUTRAL, GREEDY_TEMPERATURE, SamplingParams, generate_processors, transformers_processors
from smolkit.processors import FrequencyPenaltyLogitsProcessor, PresencePenaltyLogitsProcessor

__all__ = [
    "DEFAULT_MODEL_ID",
    "SNIPPET_TARGETS",
    "VLLM_STAGE_ORDER",
    "VLLM_VERSION",
    "ExplainedStage",
    "Explanation",
    "ExportWarning",
    "equivalent",
    "explain",
    "from_generation_config",
    "from_model_defaults",
    "from_openai",
    "in_vllm_order",
    "model_id",
    "snippet",
    "to_openai",
    "to_vllm",
]

VLLM_VERSION = "0.24"
"""The vLLM release whose ``SamplingParams`` and OpenAI-compatible server these exports were checked against
(``vllm/sampling_params.py`` and ``vllm/entrypoints/openai/chat_completion/protocol.py``). The field names have not
changed since v0.4; the ranges noted in ``to_vllm`` are those of this release."""

VLLM_MAX_TEMPERATURE = 2.0  # vLLM >= 0.24 rejects temperature > 2, as the OpenAI API does
VLLM_MIN_TEMPERATURE = 0.01  # vLLM raises 0 < temperature < 0.01 to 0.01 (with a warning)
OPENAI_MAX_SEED = 2**63 - 1  # the API's seed (and vLLM's server's) is a signed 64-bit integer
OPENAI_MAX_STOP = 4  # OpenAI accepts at most 4 stop sequences

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub id of the embedded model (the language model inside SmolVLM-256M), used in snippets by default."""

SNIPPET_TARGETS = ("transformers", "vllm", "openai")

VLLM_STAGE_ORDER = (
    "min_tokens",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "temperature",
    "min_p",
    "top_k",
    "top_p",
)
"""The order vLLM's sampler applies the stages in (vllm/v1/sample/sampler.py, ``Sampler``'s docstring): logits
processors that can change the argmax (min_tokens), then the penalties, then temperature, then the argmax-invariant
processors (min_p), then top-k and top-p. transformers applies min_p last, after top_p."""

VLLM_GENERATION_CONFIG_FIELDS = ("repetition_penalty", "temperature", "top_k", "top_p", "min_p", "max_new_tokens")
"""The fields of a model's generation_config.json that a vLLM server uses as request defaults (its
``ModelConfig.get_diff_sampling_param``); it reads no ``do_sample``."""


class ExportWarning(UserWarning):
    """A value that reaches the target changed, or not at all (filter with ``warnings.simplefilter``)."""


def _warn(message: str) -> None:
    """Warn with the caller's line: the first frame outside smolkit (SamplingParams' methods delegate here)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("smolkit"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, ExportWarning, stacklevel=level)


# -- export ------------------------------------------------------------------------------------------------------


def _sampling_temperature(params: SamplingParams, target: str) -> float:
    """The temperature a vLLM / OpenAI request needs: 0 for greedy (they have no do_sample), else checked."""
    if params.greedy:
        return 0.0
    if params.temperature > VLLM_MAX_TEMPERATURE:
        raise ValueError(
            f"temperature={params.temperature:g} cannot be exported to {target}: vLLM (>= {VLLM_VERSION}) and the "
            f"OpenAI API accept temperature in [0, {VLLM_MAX_TEMPERATURE:g}]"
        )
    if params.temperature < VLLM_MIN_TEMPERATURE:
        _warn(
            f"temperature={params.temperature:g}: vLLM raises temperatures in (0, {VLLM_MIN_TEMPERATURE:g}) to "
            f"{VLLM_MIN_TEMPERATURE:g}, so it samples a little more broadly than smolkit shows"
        )
    return params.temperature


def _check_n(params: SamplingParams, target: str) -> None:
    if params.greedy and params.n > 1:
        raise ValueError(
            f"n={params.n} with greedy decoding cannot be exported to {target}: vLLM rejects n > 1 when temperature "
            "is 0 (every continuation would be the same); use n=1, or sample with a temperature"
        )


def to_vllm(params: SamplingParams, as_object: bool = False) -> Any:
    """Keyword arguments for vLLM's ``SamplingParams`` that sample what smolkit shows (vLLM 0.24's names).

    Greedy decoding (do_sample=False or temperature 0) becomes ``temperature=0``, as vLLM has no do_sample (it
    then ignores top_p, top_k and min_p itself). top_k "all tokens" is sent as -1, which every vLLM release accepts
    (0 means the same since v0.9). ``as_object=True`` returns ``vllm.SamplingParams(**kwargs)`` and needs vllm.

    Raises ValueError, naming the field, for what vLLM cannot hold: temperature above 2 (rejected since v0.24, as by
    the OpenAI API) and n > 1 with greedy decoding. Warns (ExportWarning) when vLLM will change a value:
    temperatures in (0, 0.01) are raised to 0.01.

    >>> to_vllm(SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=32))
    ... # doctest: +NORMALIZE_WHITESPACE
    {'n': 1, 'presence_penalty': 0.0, 'frequency_penalty': 0.0, 'repetition_penalty': 1.0, 'temperature': 0.7,
     'top_p': 0.9, 'top_k': -1, 'min_p': 0.0, 'seed': None, 'stop_token_ids': [], 'max_tokens': 32, 'min_tokens': 0}
    """
    _check_n(params, "vLLM")
    kwargs = {
        "n": params.n,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "repetition_penalty": params.repetition_penalty,
        "temperature": _sampling_temperature(params, "vLLM"),
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,
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
        _warn(
            f"stop: {lost} are not sent as stop strings (no clean text, or more than {OPENAI_MAX_STOP}); "
            "extra_body stop_token_ids still stops a vLLM server there"
        )
    return texts


def to_openai(
    params: SamplingParams,
    model: str,
    messages: Sequence[Mapping[str, Any]] | None = None,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Keyword arguments for ``client.chat.completions.create(**body)`` (the ``openai`` package) with this preset.

    What the OpenAI API has goes in the body: temperature (0 for greedy), top_p, max_completion_tokens,
    presence_penalty, frequency_penalty, n, seed (only when set) and, when a ``tokenizer`` (or LoadedModel) is
    given, ``stop``: the text of each stop token. What it lacks goes in ``extra_body``, which vLLM's
    OpenAI-compatible server reads: top_k, min_p, repetition_penalty, min_tokens, stop_token_ids. Every sampling
    field is sent, because a vLLM server fills the fields a request leaves out from the model's
    generation_config.json. For raw HTTP, merge ``extra_body`` into the top level of the JSON.

    Warns (ExportWarning) listing the extra_body values that change sampling: a plain OpenAI endpoint does not
    apply them (OpenAI's own API rejects unknown fields; leave extra_body out there). Raises ValueError, naming the
    field, for temperature above 2 and seeds beyond a signed 64-bit integer.

    >>> body = to_openai(SamplingParams(temperature=0.7, seed=1), model="smollm2")
    >>> body["temperature"], body["seed"], body["extra_body"]["top_k"]
    (0.7, 1, -1)
    """
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be the served model's name, e.g. {DEFAULT_MODEL_ID!r}, got {model!r}")
    _check_n(params, "an OpenAI-style request")
    body: dict[str, Any] = {"model": model}
    if messages is not None:
        if isinstance(messages, (str, bytes, Mapping)) or not all(isinstance(m, Mapping) for m in messages):
            raise TypeError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {messages!r}")
        body["messages"] = [dict(m) for m in messages]
    body.update(
        temperature=_sampling_temperature(params, "an OpenAI-style request"),
        top_p=params.top_p,
        max_completion_tokens=params.max_new_tokens,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        n=params.n,
    )
    if params.seed is not None:
        if params.seed > OPENAI_MAX_SEED:
            raise ValueError(
                f"seed={params.seed} cannot be sent in an OpenAI-style request: the API (and vLLM's server) take a "
                f"signed 64-bit seed, at most 2**63 - 1"
            )
        body["seed"] = params.seed
    if tokenizer is not None and params.stop_token_ids:
        stops = _stop_strings(params, tokenizer)
        if stops:
            body["stop"] = stops
    extra = {
        "top_k": params.top_k if params.top_k > 0 else -1,
        "min_p": params.min_p,
        "repetition_penalty": params.repetition_penalty,
        "min_tokens": params.min_tokens,
        "stop_token_ids": list(params.stop_token_ids),
    }
    body["extra_body"] = extra
    effective = {
        "top_k": params.top_k > 0,
        "min_p": params.min_p > 0,
        "repetition_penalty": params.repetition_penalty != 1,
        "min_tokens": params.min_tokens > 0,
        "stop_token_ids": bool(params.stop_token_ids),
    }
    if params.greedy:  # greedy: top_k and min_p change nothing
        effective.update(top_k=False, min_p=False)
    lost = [f"{name}={extra[name]!r}" for name, on in effective.items() if on]
    if lost:
        _warn(
            f"a plain OpenAI endpoint does not apply extra_body ({', '.join(lost)}): only vLLM-compatible "
            "servers do; OpenAI's own API rejects unknown fields"
        )
    return body


# -- snippets ----------------------------------------------------------------------------------------------------


def _check_target(target: Any) -> str:
    if target not in SNIPPET_TARGETS:
        raise ValueError(f"target must be one of {', '.join(map(repr, SNIPPET_TARGETS))}, got {target!r}")
    return target


def _kwargs_lines(kwargs: Mapping[str, Any], indent: str) -> str:
    return "\n".join(f"{indent}{name}={value!r}," for name, value in kwargs.items())


def _generation_config_fields(params: SamplingParams) -> dict[str, Any]:
    """The GenerationConfig fields ``to_generation_config`` sets that do not depend on the model."""
    gc, _ = params.to_generation_config(prompt_length=0)
    names = ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_new_tokens")
    fields = {name: getattr(gc, name) for name in names if getattr(gc, name) is not None}
    if params.min_tokens:
        fields["min_new_tokens"] = params.min_tokens
    return fields


def model_id(lm: Any) -> str:
    """The name a serving stack knows ``lm`` by: the Hub id for the embedded model, else the name it was loaded as."""
    name = getattr(lm, "name", lm)
    return DEFAULT_MODEL_ID if name == "embedded" else str(name)


def snippet(
    params: SamplingParams,
    target: str,
    model: str = DEFAULT_MODEL_ID,
    prompt: str = "Write a haiku about tea.",
    vision: bool | None = None,
) -> str:
    """A few lines of Python that run this preset on ``target``: "transformers", "vllm" or "openai".

    transformers: a GenerationConfig with every sampling field set (so neither the model's generation_config.json
    nor transformers' top_k=50 leaks in), smolkit's processors for presence/frequency penalties, the seed; for a
    vision-language model (``vision``, by default when the name says SmolVLM or Idefics) the processor and
    AutoModelForImageTextToText. vLLM: ``SamplingParams(**to_vllm())`` and ``llm.chat``. OpenAI:
    ``client.chat.completions.create`` against a vLLM server, with ``extra_body``. Raises ValueError for an
    unknown target, and what the export raises.

    >>> print(snippet(SamplingParams(temperature=0.7), "vllm").splitlines()[0])
    from vllm import LLM, SamplingParams
    """
    target = _check_target(target)
    if not isinstance(model, str) or not model:
        raise TypeError(f"model must be the model's name (a Hub id), e.g. {DEFAULT_MODEL_ID!r}, got {model!r}")
    messages = [{"role": "user", "content": prompt}]
    if target == "vllm":
        return "\n".join(
            [
                "from vllm import LLM, SamplingParams",
                "",
                f"llm = LLM(model={model!r})",
                "params = SamplingParams(",
                _kwargs_lines(to_vllm(params), "    "),
                ")",
                f"outputs = llm.chat({messages!r}, params)",
                "print(outputs[0].outputs[0].text)",
            ]
        )
    if target == "openai":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExportWarning)  # said in a comment in the code instead
            body = to_openai(params, model=model, messages=messages)
        extra = body.pop("extra_body")
        return "\n".join(
            [
                "from openai import OpenAI",
                "",
                f"# a vLLM server, started with: vllm serve {model}",
                'client = OpenAI(base_url="http://localhost:8000/v1", api_key="EMPTY")',
                "response = client.chat.completions.create(",
                _kwargs_lines(body, "    "),
                "    # vLLM's extensions; a plain OpenAI endpoint rejects them: drop extra_body there",
                f"    extra_body={extra!r},",
                ")",
                "for choice in response.choices:",
                "    print(choice.message.content)",
            ]
        )
    if vision is None:
        vision = any(word in model.lower() for word in ("smolvlm", "idefics"))
    fields = _generation_config_fields(params)
    classes = "AutoModelForImageTextToText, AutoProcessor" if vision else "AutoModelForCausalLM, AutoTokenizer"
    lines = ["import torch", f"from transformers import {classes}, GenerationConfig"]
    penalties = [
        (name, cls.__name__, getattr(params, name))
        for name, cls in (
            ("presence_penalty", PresencePenaltyLogitsProcessor),
            ("frequency_penalty", FrequencyPenaltyLogitsProcessor),
        )
        if getattr(params, name) != 0
    ]
    if penalties:
        lines[1:1] = [
            "from transformers import LogitsProcessorList",
            f"from smolkit import {', '.join(cls for _, cls, _ in penalties)}  # transformers has no such penalty",
        ]
    if vision:  # SmolVLM: a processor reads images and text; the message content is a list of parts
        messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
        lines += ["", f"tokenizer = AutoProcessor.from_pretrained({model!r})  # SmolVLM's processor"]
        lines.append(f"model = AutoModelForImageTextToText.from_pretrained({model!r})")
    else:
        lines += ["", f"tokenizer = AutoTokenizer.from_pretrained({model!r})"]
        lines.append(f"model = AutoModelForCausalLM.from_pretrained({model!r})")
    lines += [
        f"messages = {messages!r}",
        "inputs = tokenizer.apply_chat_template(",
        '    messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"',
        ")",
        "prompt_length = inputs['input_ids'].shape[1]",
    ]
    if params.stop_token_ids:
        lines.append("eos = model.generation_config.eos_token_id  # the model's own end of sequence, kept")
    lines.append("gc = GenerationConfig(")
    lines.append(_kwargs_lines(fields, "    "))
    if params.stop_token_ids:
        stops = ", ".join(map(str, params.stop_token_ids))
        lines.append(f"    eos_token_id=[*(eos if isinstance(eos, list) else [eos]), {stops}],")
    lines.append(")")
    call = "out = model.generate(**inputs, generation_config=gc"
    if penalties:
        procs = ", ".join(f"{cls}({value!r}, prompt_length)" for _, cls, value in penalties)
        lines.append(f"processors = LogitsProcessorList([{procs}])")
        call += ", logits_processor=processors"
    if params.n > 1:
        lines.append(f"inputs = {{k: v.repeat({params.n}, 1) for k, v in inputs.items()}}  # n={params.n} samples")
    if params.seed is not None:
        lines.append(f"torch.manual_seed({params.seed})")
    lines += [
        call + ")",
        "for row in out:",
        "    print(tokenizer.decode(row[prompt_length:], skip_special_tokens=True))",
    ]
    return "\n".join(lines)


# -- import ------------------------------------------------------------------------------------------------------

_UNSUPPORTED_GENERATION_FIELDS = (
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "penalty_alpha",
    "dola_layers",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "top_h",
    "no_repeat_ngram_size",
    "encoder_repetition_penalty",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "force_words_ids",
    "constraints",
    "sequence_bias",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "exponential_decay_length_penalty",
    "guidance_scale",
    "watermarking_config",
    "renormalize_logits",
    "min_length",
)
"""GenerationConfig fields that change what is sampled and have no smolkit (or vLLM) equivalent."""

_NEUTRAL_EXTRA = {"guidance_scale": 1.0, "renormalize_logits": False}


def _library_defaults() -> dict[str, Any]:
    """transformers' own defaults for fields a GenerationConfig leaves unset (top_k=50, do_sample=False, ...)."""
    read = getattr(GenerationConfig, "_get_default_generation_params", None)
    return dict(read()) if read is not None else GenerationConfig().to_dict()


def _is_neutral(name: str, value: Any, defaults: Mapping[str, Any]) -> bool:
    if value is None:
        return True
    if name in _NEUTRAL_EXTRA:
        return value == _NEUTRAL_EXTRA[name]
    if name in _NEUTRAL:
        return value == _NEUTRAL[name]
    return name in defaults and value == defaults[name]


def _as_generation_config(gc: Any) -> GenerationConfig:
    if isinstance(gc, GenerationConfig):
        return gc
    if isinstance(gc, Mapping):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # transformers' notes about flag combinations
            return GenerationConfig.from_dict(dict(gc))
    raise TypeError(f"gc must be a transformers GenerationConfig or a dict of its fields, got {type(gc).__name__}")


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.flatten().tolist()]
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def from_generation_config(
    gc: GenerationConfig | Mapping[str, Any],
    logits_processor: Sequence[Any] | None = None,
    *,
    eos_token_id: int | Sequence[int] | None = None,
    defaults: Literal["transformers", "vllm"] = "transformers",
) -> SamplingParams:
    """The preset a transformers GenerationConfig (plus smolkit's processors, if any) stands for.

    ``eos_token_id`` is the model's own end-of-sequence id(s): the config's other eos ids become stop_token_ids
    (as ``to_generation_config`` adds them); without it every eos id counts as the model's own. ``defaults`` says
    how to read fields the config leaves unset: "transformers" as ``model.generate`` does (do_sample off, and
    top_k=50 when sampling, with an ExportWarning), "vllm" as a vLLM server reads a generation_config.json (it
    ignores do_sample and takes only temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens; unset
    means vLLM's neutral defaults). top_k 0 (all tokens) becomes -1.

    Raises ValueError listing every field that would change what is sampled but cannot cross (beam search,
    typical_p, epsilon/eta cut-offs, no_repeat_ngram_size, ...) and any processor other than smolkit's presence
    and frequency penalties; with defaults="vllm" those fields only warn, because vLLM ignores them.
    Warns for what only changes where generation stops (max_length without max_new_tokens, stop_strings,
    max_time).

    >>> from_generation_config(GenerationConfig(do_sample=True, temperature=0.7, top_k=0, max_new_tokens=20))
    SamplingParams(max_new_tokens=20, temperature=0.7)
    """
    if defaults not in ("transformers", "vllm"):
        raise ValueError(f"defaults must be 'transformers' or 'vllm', got {defaults!r}")
    gc = _as_generation_config(gc)
    lib = _library_defaults()
    vllm_mode = defaults == "vllm"

    bad = [
        f"{name}={getattr(gc, name, None)!r}"
        for name in _UNSUPPORTED_GENERATION_FIELDS
        if not _is_neutral(name, getattr(gc, name, None), lib)
    ]
    if bad:
        if vllm_mode:
            _warn(f"a vLLM server ignores these generation_config fields: {', '.join(bad)}")
        else:
            raise ValueError(
                f"cannot import {', '.join(bad)}: smolkit (like vLLM) has no equivalent, so the preset would "
                "sample from another distribution than this GenerationConfig"
            )

    fields: dict[str, Any] = {}
    if gc.max_new_tokens is not None:
        fields["max_new_tokens"] = gc.max_new_tokens
    elif gc.max_length is not None:
        _warn(
            f"max_length={gc.max_length} counts the prompt too; smolkit's max_new_tokens counts only new tokens, "
            f"so the preset keeps max_new_tokens={SamplingParams.max_new_tokens}"
        )
    for name in ("stop_strings", "max_time"):
        if getattr(gc, name, None) is not None:
            _warn(f"{name}={getattr(gc, name)!r} is not imported: smolkit stops only at EOS, stop ids and length")
    if not vllm_mode and gc.min_new_tokens:
        fields["min_tokens"] = gc.min_new_tokens

    if vllm_mode:
        if gc.do_sample is False:
            _warn("do_sample=False is ignored by vLLM (it has no do_sample): it samples unless temperature is 0")
        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
            if getattr(gc, name) is not None:
                fields[name] = getattr(gc, name)
        if gc.top_k is not None:
            fields["top_k"] = gc.top_k
    else:
        sampling = gc.do_sample if gc.do_sample is not None else lib.get("do_sample", False)
        fields["do_sample"] = bool(sampling)
        if gc.repetition_penalty is not None:
            fields["repetition_penalty"] = gc.repetition_penalty
        if sampling:
            for name in ("temperature", "top_p", "top_k"):
                value = getattr(gc, name)
                if value is None and lib.get(name) is not None:
                    value = lib[name]
                    if name == "top_k" and value:
                        _warn(
                            f"top_k is unset: transformers' generate applies its default top_k={value}, so the "
                            "preset keeps it (defaults='vllm' reads the config as vLLM does: all tokens)"
                        )
                if value is not None:
                    fields[name] = value
            if gc.min_p is not None:
                fields["min_p"] = gc.min_p
        elif gc.temperature is not None or gc.top_p is not None or gc.top_k is not None:
            # Not applied by transformers (greedy), kept so that the preset says what the config says.
            fields.update({n: getattr(gc, n) for n in ("temperature", "top_p", "top_k") if getattr(gc, n) is not None})
    if fields.get("top_k") == 0:
        fields["top_k"] = -1

    model_eos = _ids(eos_token_id) if eos_token_id is not None else _ids(gc.eos_token_id)
    stops = [t for t in _ids(gc.eos_token_id) if t not in model_eos]
    if stops:
        fields["stop_token_ids"] = stops
    if gc.num_return_sequences:
        fields["n"] = gc.num_return_sequences

    for proc in logits_processor or ():
        if isinstance(proc, PresencePenaltyLogitsProcessor):
            fields["presence_penalty"] = proc.presence_penalty
        elif isinstance(proc, FrequencyPenaltyLogitsProcessor):
            fields["frequency_penalty"] = proc.frequency_penalty
        else:
            raise ValueError(
                f"logits_processor: cannot import {type(proc).__name__}: only smolkit's "
                "PresencePenaltyLogitsProcessor and FrequencyPenaltyLogitsProcessor have a SamplingParams field"
            )
    return SamplingParams(**fields)


def from_model_defaults(source: Any, defaults: Literal["transformers", "vllm"] = "transformers") -> SamplingParams:
    """The preset a model's own generation_config.json stands for (see ``from_generation_config``).

    ``source``: a LoadedModel, a transformers model, a GenerationConfig, a folder with a generation_config.json,
    or a Hub id (read from the Hugging Face cache, or downloaded: that is asking for the network). The model's eos
    ids stay its own (no stop_token_ids). With ``defaults="transformers"`` this is what a plain
    ``model.generate(**inputs)`` does; with "vllm" what ``vllm serve`` does by default: often not the same.
    """
    gc = _source_generation_config(source)
    return from_generation_config(gc, eos_token_id=_ids(gc.eos_token_id), defaults=defaults)


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


_OPENAI_SAMPLING = {
    "temperature",
    "top_p",
    "max_completion_tokens",
    "max_tokens",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "n",
    "stop",
    "top_k",
    "min_p",
    "repetition_penalty",
    "min_tokens",
    "stop_token_ids",
}
_OPENAI_PASSIVE = {
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
}
"""Request fields that do not change what is sampled (they are read past without a word)."""

_OPENAI_NEUTRAL = {
    "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
    "structured_outputs": (None,),
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
    them), so ``from_openai(params.to_vllm())`` works too (``max_tokens``). ``None`` means unset; unset fields
    take ``defaults`` when given (pass ``SamplingParams.from_model_defaults(lm, defaults="vllm")`` to read the
    request as a vLLM server for that model would), else smolkit's defaults, which are vLLM's and OpenAI's
    (except max_new_tokens=64: the API's is "until the context ends"). seed -1 means no seed (vLLM).

    ``stop`` strings: with a ``tokenizer`` (or LoadedModel), those that are exactly one token become stop ids;
    the others cannot cross (smolkit stops on token ids) and an ExportWarning lists them. Raises ValueError naming
    the fields that change sampling but have no smolkit equivalent (logit_bias, response_format, ...); warns for
    fields it does not know.

    >>> from_openai({"model": "m", "temperature": 0.2, "extra_body": {"top_k": 40}})
    SamplingParams(temperature=0.2, top_k=40)
    """
    if not isinstance(body, Mapping):
        raise TypeError(f"body must be a dict (the request's JSON), got {type(body).__name__}")
    merged = {k: v for k, v in body.items() if k != "extra_body"}
    extra = body.get("extra_body") or {}
    if not isinstance(extra, Mapping):
        raise TypeError(f"extra_body must be a dict, got {type(extra).__name__}")
    merged.update(extra)

    bad = [
        f"{name}={merged[name]!r}"
        for name, neutral in _OPENAI_NEUTRAL.items()
        if name in merged and merged[name] not in neutral
    ]
    if bad:
        raise ValueError(f"cannot import {', '.join(bad)}: smolkit has no equivalent, so it would sample otherwise")
    unknown = sorted(set(merged) - _OPENAI_SAMPLING - _OPENAI_PASSIVE - set(_OPENAI_NEUTRAL))
    if unknown:
        _warn(f"not imported (not sampling parameters smolkit knows): {', '.join(unknown)}")

    values = {k: v for k, v in merged.items() if k in _OPENAI_SAMPLING and v is not None}
    fields: dict[str, Any] = {}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "n", "min_p", "min_tokens"):
        if name in values:
            fields[name] = values[name]
    if "repetition_penalty" in values:
        fields["repetition_penalty"] = values["repetition_penalty"]
    if "max_completion_tokens" in values:
        fields["max_new_tokens"] = values["max_completion_tokens"]
    elif "max_tokens" in values:
        fields["max_new_tokens"] = values["max_tokens"]
    if "top_k" in values:
        fields["top_k"] = -1 if values["top_k"] == 0 else values["top_k"]
    if "seed" in values and values["seed"] != -1:
        fields["seed"] = values["seed"]
    stop_ids = list(values.get("stop_token_ids") or [])
    stop = values.get("stop")
    if stop:
        strings = [stop] if isinstance(stop, str) else list(stop)
        lost = []
        tok = getattr(tokenizer, "tokenizer", tokenizer)
        for text in strings:
            ids = tok(text, add_special_tokens=False)["input_ids"] if tok is not None else []
            if len(ids) == 1:
                stop_ids.append(int(ids[0]))
            else:
                lost.append(text)
        if lost:
            reason = "pass tokenizer= to map single-token strings" if tok is None else "not one token each"
            _warn(f"stop strings {lost} are not imported: smolkit stops on token ids ({reason})")
    if stop_ids:
        fields["stop_token_ids"] = stop_ids
    base = defaults if defaults is not None else SamplingParams()
    return base.replace(**fields)


def equivalent(a: SamplingParams, b: SamplingParams) -> bool:
    """True when two presets sample alike: equal, except what greedy decoding ignores (do_sample vs temperature 0,
    top_p, top_k, min_p) and top_k 0 vs -1 (both all tokens).

    >>> equivalent(SamplingParams(do_sample=False, top_p=0.5), SamplingParams(temperature=0))
    True
    """
    return _canonical(a) == _canonical(b)


def _canonical(p: SamplingParams) -> SamplingParams:
    if p.greedy:
        return p.replace(do_sample=False, temperature=1.0, top_p=1.0, top_k=-1, min_p=0.0)
    return p.replace(top_k=-1) if p.top_k == 0 else p


# -- explain -----------------------------------------------------------------------------------------------------

_STAGE_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "RepetitionPenaltyLogitsProcessor": (("repetition_penalty", "penalty"),),
    "MinNewTokensLengthLogitsProcessor": (("min_new_tokens", "min_new_tokens"),),
    "PresencePenaltyLogitsProcessor": (("presence_penalty", "presence_penalty"),),
    "FrequencyPenaltyLogitsProcessor": (("frequency_penalty", "frequency_penalty"),),
    "TemperatureLogitsWarper": (("temperature", "temperature"),),
    "TopKLogitsWarper": (("top_k", "top_k"),),
    "TopPLogitsWarper": (("top_p", "top_p"),),
    "MinPLogitsWarper": (("min_p", "min_p"),),
    "TypicalLogitsWarper": (("typical_p", "mass"),),
    "EpsilonLogitsWarper": (("epsilon_cutoff", "epsilon"),),
    "EtaLogitsWarper": (("eta_cutoff", "epsilon"),),
    "NoRepeatNGramLogitsProcessor": (("no_repeat_ngram_size", "ngram_size"),),
    "MinLengthLogitsProcessor": (("min_length", "min_length"),),
}
"""For each processor class: (GenerationConfig field, processor attribute) pairs, to show values and sources."""

PRESET = "your preset"
MODEL_CONFIG = "the model's generation config"
LIBRARY = "transformers' default"


@dataclasses.dataclass(frozen=True)
class ExplainedStage:
    """One stage generate applies: its kit name, transformers class, values and where each value came from."""

    name: str
    processor: str
    values: dict[str, Any]
    source: str

    def value_text(self) -> str:
        return ", ".join(f"{k}={_fmt(v)}" for k, v in self.values.items())


@dataclasses.dataclass(frozen=True)
class Explanation:
    """What generate will run for a preset on a model: settings, stages in order, the surprises.

    ``stages`` are read from the LogitsProcessorList transformers builds (``transformers_processors``);
    ``plain_stages`` are those a plain ``model.generate(**inputs, **plain_kwargs)`` with the same values would
    build, where the model's config and transformers' defaults fill what is unset; ``vllm_order`` the same active
    stages in vLLM's order; ``notes`` the differences worth knowing, as (kind, message) pairs.
    """

    model: str
    params: SamplingParams
    settings: tuple[tuple[str, str, str], ...]
    stages: tuple[ExplainedStage, ...]
    plain_kwargs: dict[str, Any]
    plain_stages: tuple[ExplainedStage, ...]
    vllm_order: tuple[str, ...]
    notes: tuple[tuple[str, str], ...]

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    @property
    def note_kinds(self) -> list[str]:
        return [kind for kind, _ in self.notes]

    @property
    def plain_call(self) -> str:
        """The plain transformers call the notes compare with."""
        return "model.generate(**inputs, " + ", ".join(f"{k}={v!r}" for k, v in self.plain_kwargs.items()) + ")"

    def __str__(self) -> str:
        lines = [f"What generate runs for {self.model!r} with {self.params!r}"]
        lines += [f"  {name}: {value}" + (f"  ({source})" if source else "") for name, value, source in self.settings]
        if self.stages:
            rows = [("#", "stage", "value", "from")] + [
                (str(i), s.name, s.value_text(), s.source) for i, s in enumerate(self.stages, 1)
            ]
            widths = [max(len(r[i]) for r in rows) for i in range(3)]
            lines.append("stages, in generate's order:")
            lines += [
                "  " + "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows
            ]
        else:
            lines.append("stages: none (the model's own distribution, unchanged)")
        if self.vllm_order and list(self.vllm_order) != [s for s in self.stage_names if s in self.vllm_order]:
            lines.append(f"vLLM's order for the same stages: {', '.join(self.vllm_order)}")
        if self.notes:
            lines.append("worth knowing:")
            if any(kind in ("top_k_default", "plain_generate_differs") for kind in self.note_kinds):
                lines.append(f"  (the plain call: {self.plain_call})")
            for kind, message in self.notes:
                lines += textwrap.wrap(f"[{kind}] {message}", 116, initial_indent="  - ", subsequent_indent="    ")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, torch.Tensor):
        return str(_ids(value))
    return str(value)


@contextlib.contextmanager
def _generation_config_of(model: Any, gc: GenerationConfig | None) -> Iterator[None]:
    """Let ``model`` use ``gc`` as its own generation config inside the block (restored afterwards)."""
    if gc is None:
        yield
        return
    saved = model.generation_config
    model.generation_config = gc
    try:
        yield
    finally:
        model.generation_config = saved


def _describe(proc: Any, source_of: Any, gc: GenerationConfig, prompt_length: int) -> ExplainedStage:
    cls = type(proc).__name__
    pairs = _STAGE_FIELDS.get(cls, ())
    values = {field: getattr(proc, attr) for field, attr in pairs if hasattr(proc, attr)}
    fields = [field for field, _ in pairs]
    if cls in ("PresencePenaltyLogitsProcessor", "FrequencyPenaltyLogitsProcessor"):
        source = PRESET + " (smolkit's processor)"
    elif cls == "MinLengthLogitsProcessor" and gc.min_new_tokens is not None:
        added = proc.min_length - prompt_length
        values = {"min_length": f"prompt + {added}"}
        effect = "blocks nothing" if added == 0 else "the same block as min_tokens"
        source = f"transformers, from min_new_tokens={gc.min_new_tokens} ({effect})"
    elif fields:
        source = source_of(fields[0])
    else:
        source = MODEL_CONFIG + " or transformers"
    if cls == "MinNewTokensLengthLogitsProcessor":
        values["blocks"] = _ids(proc.eos_token_id)
    return ExplainedStage(stage_name(proc), cls, values, source)


def _plain_kwargs(params: SamplingParams) -> dict[str, Any]:
    """The keyword arguments a vLLM-minded user would pass to ``model.generate`` for this preset: the fields both
    vocabularies share, where they differ from the defaults, plus do_sample."""
    kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "do_sample": not params.greedy}
    defaults = SamplingParams()
    names = (
        ["repetition_penalty"] if params.greedy else ["temperature", "top_p", "top_k", "min_p", "repetition_penalty"]
    )
    for name in names:
        if getattr(params, name) != getattr(defaults, name):
            kwargs[name] = getattr(params, name)
    if params.min_tokens:
        kwargs["min_new_tokens"] = params.min_tokens
    return kwargs


def explain(
    params: SamplingParams,
    lm: Any,
    generation_config: GenerationConfig | Mapping[str, Any] | None = None,
) -> Explanation:
    """What generate will really run for ``params`` on ``lm``, where each value came from, and the surprises.

    The stages are read from the LogitsProcessorList transformers itself builds for smolkit's translation, by the
    steps generate runs (``smolkit.params.generate_processors``, which Distribution.stages shows too), in its
    order. Each value's source is the preset, the model's
    generation config, or a transformers default. For contrast, the stages a plain
    ``model.generate(**inputs, do_sample=..., temperature=..., ...)`` would build with the same values (the model's
    config and the library's defaults, e.g. top_k=50, fill what is unset), and the same stages in vLLM's order.
    ``generation_config`` replaces the model's own for this explanation (e.g. another model's
    generation_config.json: the stages depend on it, not on the weights).
    """
    if not isinstance(params, SamplingParams):
        raise TypeError(f"params must be a smolkit.SamplingParams, got {type(params).__name__}")
    if not hasattr(lm, "model") or not hasattr(lm, "eos_token_ids"):
        raise TypeError(f"lm must be a model from smolkit.load_model(), got {type(lm).__name__}")
    model = lm.model
    base_override = _as_generation_config(generation_config) if generation_config is not None else None
    with _generation_config_of(model, base_override), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notes about flags set on purpose
        base = model.generation_config
        eos = _ids(base.eos_token_id) or list(lm.eos_token_ids)
        pad = base.pad_token_id if base.pad_token_id is not None else lm.pad_token_id
        input_ids = torch.full((1, 1), pad if pad is not None else 0, dtype=torch.long, device=lm.device)
        kit_gc, custom = params.to_generation_config(prompt_length=1, eos_token_id=eos, pad_token_id=pad, base=base)
        kit = generate_processors(model, kit_gc, custom, input_ids, 1)
        plain_kwargs = _plain_kwargs(params)
        plain_gc = GenerationConfig(**plain_kwargs)
        plain = generate_processors(model, plain_gc, LogitsProcessorList(), input_ids, 1)
    lib = _library_defaults()

    def source(gc: GenerationConfig) -> Any:
        def of(field: str) -> str:
            ours = getattr(gc, field, None)
            theirs = getattr(base, field, None)
            if gc is kit_gc and field in _NEUTRAL and ours == _NEUTRAL[field] and not _is_neutral(field, theirs, lib):
                return f"smolkit (switches off the model's {field}={_fmt(theirs)})"
            if ours is not None:
                return PRESET
            return MODEL_CONFIG if theirs is not None else LIBRARY

        return of

    stages = tuple(_describe(p, source(kit_gc), kit_gc, 1) for p in kit)
    plain_stages = tuple(_describe(p, source(plain_gc), plain_gc, 1) for p in plain)
    vllm_order = tuple(n for n in VLLM_STAGE_ORDER if n in {s.name for s in stages})

    stop_text = f"{', '.join(map(str, eos))} (the model's EOS, from its generation config)" if eos else "no EOS"
    if params.stop_token_ids:
        stop_text += f"; {', '.join(map(str, params.stop_token_ids))} (your stop_token_ids)"
    if params.greedy:
        why = "do_sample=False" if not params.do_sample else f"temperature={params.temperature:g} < 1e-5"
        decoding = f"greedy ({why}): always the most likely token"
    else:
        decoding = "sampling"
    settings = [
        ("decoding", decoding, PRESET),
        ("max_new_tokens", str(params.max_new_tokens), PRESET),
        ("stops at token", stop_text, ""),
    ]
    if params.seed is not None:
        settings.append(("seed", str(params.seed), PRESET))
    if params.n > 1:
        settings.append(("n", f"{params.n} continuations in one batch", PRESET))
    notes = _notes(params, stages, plain_kwargs, plain_stages, base)
    return Explanation(lm.name, params, tuple(settings), stages, plain_kwargs, plain_stages, vllm_order, tuple(notes))


def _notes(
    params: SamplingParams,
    stages: tuple[ExplainedStage, ...],
    plain_kwargs: dict[str, Any],
    plain_stages: tuple[ExplainedStage, ...],
    base: GenerationConfig,
) -> list[tuple[str, str]]:
    notes: list[tuple[str, str]] = []
    kit = {s.name: s for s in stages}
    for s in plain_stages:
        ours = kit.get(s.name)
        if ours is not None and ours.values == s.values:
            continue
        kind = "top_k_default" if s.name == "top_k" and s.source == LIBRARY else "plain_generate_differs"
        instead = f"smolkit runs {ours.value_text()}" if ours else "smolkit leaves this stage off"
        notes.append((kind, f"the plain call would apply {s.value_text()} ({s.source}); {instead}."))
    if params.greedy:
        ignored = [
            f"{name}={_fmt(getattr(params, name))}"
            for name in ("temperature", "top_p", "top_k", "min_p")
            if getattr(params, name) != getattr(SamplingParams, name)
        ]
        if not params.do_sample and ignored:
            verb = "changes" if len(ignored) == 1 else "change"
            notes.append(
                (
                    "greedy_ignores_sampling",
                    f"do_sample=False: decoding is greedy, so {', '.join(ignored)} {verb} nothing here (vLLM has no "
                    "do_sample: the export sends temperature=0, else vLLM would sample).",
                )
            )
        if params.do_sample and params.temperature < GREEDY_TEMPERATURE:
            notes.append(
                (
                    "temperature_zero",
                    "temperature=0 means greedy (vLLM's meaning); transformers rejects temperature=0, so smolkit "
                    "sends do_sample=False instead.",
                )
            )
    else:
        if params.top_k == -1:
            notes.append(
                (
                    "top_k_minus_one",
                    "top_k=-1 (vLLM: all tokens) reaches transformers as top_k=0: transformers rejects -1, and "
                    "leaving top_k unset would mean its default, 50.",
                )
            )
        if params.min_p > 0 and (params.top_k > 0 or params.top_p < 1):
            notes.append(
                (
                    "min_p_order",
                    "transformers applies min_p after top_k/top_p (the order above); vLLM applies it before them, "
                    "right after temperature, so with a cut-off the two can keep different tokens "
                    "(smolkit.export.in_vllm_order shows vLLM's result).",
                )
            )
    if params.repetition_penalty != 1:
        notes.append(
            (
                "repetition_counts_prompt",
                f"repetition_penalty={params.repetition_penalty:g} penalises every token of the prompt as well as "
                "the generated ones (transformers and vLLM alike).",
            )
        )
    if params.presence_penalty or params.frequency_penalty:
        notes.append(
            (
                "penalties_count_generated",
                "presence/frequency penalties count only generated tokens, not the prompt (vLLM's meaning; "
                "transformers has neither: smolkit adds its own processors).",
            )
        )
    served = {f: getattr(base, f) for f in VLLM_GENERATION_CONFIG_FIELDS if getattr(base, f, None) is not None}
    if served:
        text = ", ".join(f"{k}={_fmt(v)}" for k, v in served.items())
        extra = " (and ignores its do_sample)" if base.do_sample is not None else ""
        notes.append(
            (
                "vllm_server_defaults",
                f"a vLLM server for this model fills request fields left unset from its generation config: {text}"
                f"{extra}; smolkit's exports set every field.",
            )
        )
    return notes


# -- vLLM's stage order, for comparison --------------------------------------------------------------------------


def in_vllm_order(dist: Distribution) -> torch.Tensor:
    """The final probabilities if ``dist``'s stages ran in vLLM's order (min_p before top_k and top_p).

    Uses the processors transformers builds for ``dist.params`` (from its cached logits, no forward pass), only
    moved: temperature, min_p, top_k, top_p after the penalties. Greedy decoding is the same in both (the argmax).
    An illustration of the ordering difference, not a reimplementation of vLLM's kernels.
    """
    if not isinstance(dist, Distribution):
        raise TypeError(f"dist must be a Distribution (from next_token_distribution), got {type(dist).__name__}")
    lm, params = dist.lm, dist.params
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        procs = transformers_processors(
            lm.model, params, dist.input_ids, dist.prompt_length, lm.eos_token_ids, lm.pad_token_id
        )
    order = {name: i for i, name in enumerate(VLLM_STAGE_ORDER)}
    procs = sorted(procs, key=lambda p: order.get(stage_name(p), -1))  # stable: unknown stages keep their place
    scores = dist.logits.unsqueeze(0)
    for proc in procs:
        scores = proc(dist.input_ids, scores)
    if params.greedy:
        out = torch.zeros_like(dist.logits)
        out[int(scores[0].argmax())] = 1.0
        return out
    return torch.softmax(scores, dim=-1)[0]
