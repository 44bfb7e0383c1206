"""Everything the kit knows about transformers' generate: the translation of SamplingParams to a GenerationConfig,
the processor list generate builds (read from transformers itself), the stages' names, and applying them.

vLLM and transformers name and order the same ideas differently; this is the one place that knows the mapping:

============================  =====================================  ==========================================
smolkit / vLLM                transformers                           note
============================  =====================================  ==========================================
temperature=0                 do_sample=False                        transformers rejects temperature=0
top_k=0 (or -1): all tokens   top_k=0                                transformers rejects -1 and, when unset,
                                                                     silently applies its default top_k=50
presence/frequency_penalty    smolkit's own LogitsProcessors         transformers has none
min_tokens                    min_new_tokens (blocks EOS + stops)    also blocks every stop_token_id, as vLLM;
                                                                     generate derives min_length from it too
stop_token_ids                eos_token_id=[model EOS, *stops]
seed                          torch.Generator state around generate  transformers has no seed argument
min_p                         min_p                                  transformers applies it after top_p;
                                                                     vLLM before top_k (smolkit follows
                                                                     transformers, which really samples)
============================  =====================================  ==========================================
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from transformers import GenerationConfig, LogitsProcessorList

from smolkit.params import SamplingParams
from smolkit.processors import FrequencyPenaltyLogitsProcessor, PresencePenaltyLogitsProcessor

__all__ = [
    "NEUTRAL",
    "STAGE_NAMES",
    "UNSUPPORTED_GENERATION_FIELDS",
    "Stages",
    "apply_stages",
    "for_model",
    "generate_processors",
    "hidden_stages",
    "library_defaults",
    "processors_for",
    "stage_name",
    "to_transformers",
]

NEUTRAL: dict[str, Any] = {
    "min_length": 0,
    "min_new_tokens": 0,
    "no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}
"""Values that switch a transformers stage off, used where a model's generation config switches it on."""

UNSUPPORTED_GENERATION_FIELDS = {
    "num_beams": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "penalty_alpha": None,
    "dola_layers": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "top_h": None,
    "no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "constraints": None,
    "sequence_bias": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": 1.0,
    "watermarking_config": None,
    "renormalize_logits": False,
    "min_length": 0,
}
"""GenerationConfig fields that change what is sampled and have no smolkit (or vLLM) equivalent, each with the
value that switches it off (None: unset)."""


def hidden_stages(base: GenerationConfig | None) -> list[str]:
    """The stages a model's own generation config (``base``) adds to every generate call that SamplingParams (and
    vLLM) cannot express, e.g. ``suppress_tokens=[...]``, as "field=value": generate applies them, explain shows
    them, and an export to vLLM or an OpenAI-style server cannot carry them.

    >>> hidden_stages(GenerationConfig(suppress_tokens=[5], temperature=0.7))
    ['suppress_tokens=[5]']
    """
    if base is None:
        return []
    lib = library_defaults()
    found = []
    for name, neutral in UNSUPPORTED_GENERATION_FIELDS.items():
        value = getattr(base, name, None)
        if name in NEUTRAL or value is None or value == neutral or (name in lib and value == lib[name]):
            continue  # the kit switches NEUTRAL's stages off itself
        found.append(f"{name}={value!r}")
    return found


STAGE_NAMES = {
    "RepetitionPenaltyLogitsProcessor": "repetition_penalty",
    "MinNewTokensLengthLogitsProcessor": "min_tokens",
    "PresencePenaltyLogitsProcessor": "presence_penalty",
    "FrequencyPenaltyLogitsProcessor": "frequency_penalty",
    "TemperatureLogitsWarper": "temperature",
    "TopKLogitsWarper": "top_k",
    "TopPLogitsWarper": "top_p",
    "MinPLogitsWarper": "min_p",
}
"""Stage name for each transformers processor class; any other processor is named after its class."""


def stage_name(processor: Any) -> str:
    """The kit's name for a processor: the parameter it implements (e.g. 'top_p'), else its class in snake case.

    >>> from transformers import TopPLogitsWarper, NoRepeatNGramLogitsProcessor
    >>> stage_name(TopPLogitsWarper(0.9)), stage_name(NoRepeatNGramLogitsProcessor(3))
    ('top_p', 'no_repeat_n_gram')
    """
    if isinstance(getattr(processor, "stage", None), str):
        return processor.stage  # a composite stage names itself (smolkit.engines.JointFilter)
    cls = type(processor).__name__
    if cls in STAGE_NAMES:
        return STAGE_NAMES[cls]
    base = re.sub(r"Logits(Processor|Warper)$", "", cls)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


def library_defaults() -> dict[str, Any]:
    """transformers' own defaults for fields a GenerationConfig leaves unset (top_k=50, do_sample=False, ...)."""
    read = getattr(GenerationConfig, "_get_default_generation_params", None)
    return dict(read()) if read is not None else GenerationConfig().to_dict()


def to_transformers(
    params: SamplingParams,
    *,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    base: GenerationConfig | None = None,
    prompt_length: int | None = None,
) -> tuple[GenerationConfig, LogitsProcessorList]:
    """A transformers GenerationConfig plus the processors it cannot express, for ``model.generate``.

    ``model.generate(**inputs, generation_config=gc, logits_processor=procs)`` then samples from the same
    distribution smolkit shows, for any prompt: the processors find where each prompt ends themselves (unless
    ``prompt_length`` fixes it). Every sampling field is set explicitly so that neither the model's own
    generation_config.json nor transformers' defaults (top_k=50) leak in. ``eos_token_id`` is the model's
    end-of-sequence id(s), to which the stop tokens are added; ``base`` is the model's own generation config,
    consulted only to switch off stages it turns on that the kit leaves off.

    >>> gc, procs = to_transformers(SamplingParams(temperature=0.7, presence_penalty=0.5), eos_token_id=2)
    >>> gc.do_sample, gc.temperature, gc.top_k, gc.eos_token_id, [type(p).__name__ for p in procs]
    (True, 0.7, 0, [2], ['PresencePenaltyLogitsProcessor'])
    """
    eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    stops = list(dict.fromkeys([*eos, *params.stop_token_ids]))
    fields: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "do_sample": not params.greedy,
        "num_beams": 1,
        "repetition_penalty": params.repetition_penalty,
        "eos_token_id": stops or None,
        "pad_token_id": pad_token_id if pad_token_id is not None else (stops[0] if stops else None),
    }
    if params.min_tokens > 0:
        # generate also derives min_length = prompt + min_new_tokens from it: a second stage, same block
        fields["min_new_tokens"] = params.min_tokens
    if not params.greedy:
        # Explicit values, not None: None would be filled in from the model's config or transformers' defaults.
        fields.update(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p)
        if params.min_p > 0:
            fields["min_p"] = params.min_p
    for name, neutral in NEUTRAL.items():
        value = getattr(base, name, None) if base is not None else None
        if name not in fields and value is not None and value != neutral:
            fields[name] = neutral  # the model's own config sets a stage the kit leaves off: switch it off
    return GenerationConfig(**fields), _penalty_processors(params, prompt_length)


def _penalty_processors(params: SamplingParams, prompt_length: int | None) -> LogitsProcessorList:
    """smolkit's own processors for what GenerationConfig cannot express (presence and frequency penalties)."""
    procs = LogitsProcessorList()
    if params.presence_penalty != 0:
        procs.append(PresencePenaltyLogitsProcessor(params.presence_penalty, prompt_length))
    if params.frequency_penalty != 0:
        procs.append(FrequencyPenaltyLogitsProcessor(params.frequency_penalty, prompt_length))
    return procs


def for_model(lm: Any, params: SamplingParams, prompt_length: int) -> tuple[GenerationConfig, LogitsProcessorList]:
    """``to_transformers`` for the loaded model ``lm``: its EOS, pad token and generation config, and a prompt of
    ``prompt_length`` tokens."""
    return to_transformers(
        params,
        eos_token_id=lm.eos_token_ids,
        pad_token_id=lm.pad_token_id,
        base=lm.model.generation_config,
        prompt_length=prompt_length,
    )


def processors_for(
    lm: Any, params: SamplingParams, input_ids: torch.LongTensor, prompt_length: int
) -> LogitsProcessorList:
    """The exact LogitsProcessorList ``model.generate`` builds for ``params`` on the loaded model ``lm``, for the
    next token after ``input_ids`` (prompt plus anything generated so far; the prompt is ``prompt_length`` long)."""
    gc, custom = for_model(lm, params, prompt_length)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notes about generation flags; the kit sets them on purpose
        return generate_processors(lm.model, gc, custom, input_ids, prompt_length)


def generate_processors(
    model: Any,
    gc: GenerationConfig,
    custom: LogitsProcessorList,
    input_ids: torch.LongTensor,
    prompt_length: int,
) -> LogitsProcessorList:
    """The processors ``model.generate(prompt, generation_config=gc, logits_processor=custom)`` builds, read from
    transformers itself.

    Not a copy of generate's logic: this calls the same (private) steps generate runs, in its order (merge the
    model's generation config and the library defaults, prepare the special tokens, derive the lengths, build the
    list), so the stages the kit shows are by construction the ones generate applies. Tests check the list against
    a real generate call, so a transformers release that changes these steps fails loudly.
    """
    has_default_max_length = gc.max_length is None and model.generation_config.max_length is None
    has_default_min_length = gc.min_length is None and model.generation_config.min_length is None
    merged, model_kwargs = model._prepare_generation_config(gc)
    model._prepare_special_tokens(merged, True, device=input_ids.device, batch_size=input_ids.shape[0])
    merged = model._prepare_generated_length(
        merged, has_default_max_length, has_default_min_length, "input_ids", prompt_length, input_ids
    )
    model_kwargs["attention_mask"] = torch.ones_like(input_ids)
    return model._get_logits_processor(
        generation_config=merged,
        input_ids_seq_length=prompt_length,
        encoder_input_ids=input_ids,
        logits_processor=custom,
        device=input_ids.device,
        model_kwargs=model_kwargs,
    )


class Stages(NamedTuple):
    """The next-token distribution after each stage: ``probs[name]``, and ``kept[name]``, the tokens no stage up to
    ``name`` removed (a filter sets a score to -inf). A kept token can still have probability 0.0 in float32, when
    a low temperature pushes it below the smallest float: that is rounding, not a cut."""

    probs: dict[str, torch.Tensor]
    kept: dict[str, torch.Tensor]


def apply_stages(
    logits: torch.Tensor,
    input_ids: torch.LongTensor,
    processors: Sequence[Any],
    greedy: bool,
    order: Sequence[str] | None = None,
    stage_ids: Mapping[str, torch.Tensor] | None = None,
) -> Stages:
    """The next-token distribution after each stage: softmax of ``logits`` (vocab,) as "raw", then of the scores
    after each processor (named by ``stage_name``), a one-hot "greedy" stage at the argmax when ``greedy``, and
    "final", what is sampled from; with the tokens each stage keeps.

    ``order`` lists stage names to apply in that order instead of the list's (names it does not know keep their
    place at the front), for replaying the same processors in another stack's order. ``stage_ids`` gives some
    stages other token ids than ``input_ids`` (an engine whose penalties count only a window of the text).
    """
    if order is not None:
        rank = {name: i for i, name in enumerate(order)}
        processors = sorted(processors, key=lambda p: rank.get(stage_name(p), -1))  # stable: unknown ones first
    scores = logits.unsqueeze(0)
    probs, kept = {"raw": torch.softmax(scores, dim=-1)[0]}, {"raw": torch.isfinite(logits)}
    for processor in processors:
        name = stage_name(processor)
        scores = processor((stage_ids or {}).get(name, input_ids), scores)
        probs[name] = torch.softmax(scores, dim=-1)[0]
        kept[name] = torch.isfinite(scores[0])
    if greedy:
        one_hot = torch.zeros_like(logits)
        one_hot[int(scores[0].argmax())] = 1.0
        probs["greedy"], kept["greedy"] = one_hot, one_hot > 0
    last = list(probs)[-1]
    probs["final"], kept["final"] = probs[last], kept[last]
    return Stages(probs, kept)
