"""explain: what generate will really run for a preset on a model, where each value came from, and the surprises.

The stages are read from the LogitsProcessorList transformers itself builds for the kit's translation
(``smolkit.hf.generate_processors``, which ``Distribution.stages`` shows too). For contrast, the stages a plain
``model.generate(**inputs, temperature=..., ...)`` with the same values would build, where the model's config and
the library's defaults (top_k=50) fill what is unset, and the same stages in vLLM's order. The notes are a table:
each entry says when it applies and what it says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import textwrap
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList

from smolkit.engines import explain_engine
from smolkit.export import check_params
from smolkit.hf import NEUTRAL, generate_processors, stage_name, to_transformers
from smolkit.importers import as_generation_config, ids
from smolkit.params import SamplingParams
from smolkit.tables import layout
from smolkit.vllm_rules import GREEDY_TEMPERATURE, SERVER_GENERATION_CONFIG_FIELDS, STAGE_ORDER

__all__ = ["ExplainedStage", "Explanation", "explain"]

STAGE_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "RepetitionPenaltyLogitsProcessor": (("repetition_penalty", "penalty"),),
    "MinNewTokensLengthLogitsProcessor": (("min_new_tokens", "min_new_tokens"),),
    "PresencePenaltyLogitsProcessor": (("presence_penalty", "value"),),
    "FrequencyPenaltyLogitsProcessor": (("frequency_penalty", "value"),),
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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, torch.Tensor):
        return str(value.flatten().tolist())
    return str(value)


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

    ``stages`` are read from the LogitsProcessorList transformers builds; ``plain_stages`` are those a plain
    ``model.generate(**inputs, **plain_kwargs)`` with the same values would build, where the model's config and
    transformers' defaults fill what is unset; ``vllm_order`` the same active stages in vLLM's order; ``notes`` the
    differences worth knowing, as (kind, message) pairs.
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
            rows = [("#", "stage", "value", "from")]
            rows += [(str(i), s.name, s.value_text(), s.source) for i, s in enumerate(self.stages, 1)]
            lines.append("stages, in generate's order:")
            lines += ["  " + line for line in layout(rows).splitlines()]
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


@contextlib.contextmanager
def _generation_config_of(model: Any, gc: GenerationConfig) -> Iterator[None]:
    """Let ``model`` use ``gc`` as its own generation config inside the block (restored afterwards)."""
    saved = model.generation_config
    model.generation_config = gc
    try:
        yield
    finally:
        model.generation_config = saved


@dataclasses.dataclass(frozen=True)
class _Sources:
    """Where a GenerationConfig field's value comes from: the preset, the model's config or the library."""

    base: GenerationConfig

    def of(self, gc: GenerationConfig, field: str, kit: bool) -> str:
        ours, theirs = getattr(gc, field, None), getattr(self.base, field, None)
        switched_off = field in NEUTRAL and ours == NEUTRAL[field] and theirs not in (None, NEUTRAL[field])
        if kit and switched_off:
            return f"smolkit (switches off the model's {field}={_fmt(theirs)})"
        if ours is not None:
            return PRESET
        return MODEL_CONFIG if theirs is not None else LIBRARY


def _describe(proc: Any, gc: GenerationConfig, sources: _Sources, kit: bool, prompt_length: int) -> ExplainedStage:
    cls = type(proc).__name__
    pairs = STAGE_FIELDS.get(cls, ())
    values = {field: getattr(proc, attr) for field, attr in pairs if hasattr(proc, attr)}
    if cls in ("PresencePenaltyLogitsProcessor", "FrequencyPenaltyLogitsProcessor"):
        source = PRESET + " (smolkit's processor)"
    elif cls == "MinLengthLogitsProcessor" and gc.min_new_tokens is not None:
        added = proc.min_length - prompt_length
        values = {"min_length": f"prompt + {added}"}
        effect = "blocks nothing" if added == 0 else "the same block as min_tokens"
        source = f"transformers, from min_new_tokens={gc.min_new_tokens} ({effect})"
    elif pairs:
        source = sources.of(gc, pairs[0][0], kit)
    else:
        source = MODEL_CONFIG + " or transformers"
    if cls == "MinNewTokensLengthLogitsProcessor":
        values["blocks"] = ids("eos_token_id", proc.eos_token_id)
    return ExplainedStage(stage_name(proc), cls, values, source)


def plain_kwargs(params: SamplingParams) -> dict[str, Any]:
    """The keyword arguments a vLLM-minded user would pass to ``model.generate`` for this preset: the fields both
    vocabularies share, where they differ from the defaults, plus do_sample."""
    kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "do_sample": not params.greedy}
    defaults = SamplingParams()
    names = (
        ["repetition_penalty"] if params.greedy else ["temperature", "top_p", "top_k", "min_p", "repetition_penalty"]
    )
    kwargs.update({name: getattr(params, name) for name in names if getattr(params, name) != getattr(defaults, name)})
    if params.min_tokens:
        kwargs["min_new_tokens"] = params.min_tokens
    return kwargs


def explain(
    params: SamplingParams,
    lm: Any,
    generation_config: GenerationConfig | Mapping[str, Any] | None = None,
    engine: str | None = None,
):
    """What generate will really run for ``params`` on ``lm`` (an ``Explanation``; print it).

    ``generation_config`` replaces the model's own for this explanation (e.g. another model's
    generation_config.json: the stages depend on it, not on the weights). ``engine`` ("transformers", "vllm",
    "sglang", "llama.cpp", "llama-cpp-python"): what that engine applies instead, value by value and where each
    value comes from (yours, the model's files, the engine's defaults): an ``EngineExplanation``.
    """
    check_params(params)
    if not hasattr(lm, "model") or not hasattr(lm, "eos_token_ids"):
        raise TypeError(f"lm must be a model from smolkit.load_model(), got {type(lm).__name__}")
    if engine is not None:
        return explain_engine(params, lm, engine)
    model = lm.model
    base = model.generation_config
    if generation_config is not None:
        base = as_generation_config(generation_config, "generation_config")
    eos = ids("eos_token_id", base.eos_token_id) or list(lm.eos_token_ids)
    pad = base.pad_token_id if base.pad_token_id is not None else lm.pad_token_id
    input_ids = torch.full((1, 1), pad if pad is not None else 0, dtype=torch.long, device=lm.device)
    kit_gc, custom = to_transformers(params, eos_token_id=eos, pad_token_id=pad, base=base, prompt_length=1)
    plain_gc = GenerationConfig(**plain_kwargs(params))
    with _generation_config_of(model, base), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' notes about flags set on purpose
        kit = generate_processors(model, kit_gc, custom, input_ids, 1)
        plain = generate_processors(model, plain_gc, LogitsProcessorList(), input_ids, 1)
    sources = _Sources(base)
    stages = tuple(_describe(p, kit_gc, sources, True, 1) for p in kit)
    plain_stages = tuple(_describe(p, plain_gc, sources, False, 1) for p in plain)
    vllm_order = tuple(n for n in STAGE_ORDER if n in {s.name for s in stages})
    notes = _comparison_notes(stages, plain_stages) + [
        (note.kind, note.text(params, base)) for note in NOTES if note.when(params, base)
    ]
    return Explanation(
        lm.name, params, _settings(params, eos), stages, plain_kwargs(params), plain_stages, vllm_order, tuple(notes)
    )


def _settings(params: SamplingParams, eos: list[int]) -> tuple[tuple[str, str, str], ...]:
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
    return tuple(settings)


def _comparison_notes(
    stages: tuple[ExplainedStage, ...], plain_stages: tuple[ExplainedStage, ...]
) -> list[tuple[str, str]]:
    """Where the plain call would apply other stages or values than the kit does."""
    kit = {s.name: s for s in stages}
    notes = []
    for s in plain_stages:
        ours = kit.get(s.name)
        if ours is not None and ours.values == s.values:
            continue
        kind = "top_k_default" if s.name == "top_k" and s.source == LIBRARY else "plain_generate_differs"
        instead = f"smolkit runs {ours.value_text()}" if ours else "smolkit leaves this stage off"
        notes.append((kind, f"the plain call would apply {s.value_text()} ({s.source}); {instead}."))
    return notes


@dataclasses.dataclass(frozen=True)
class Note:
    """One entry of the notes table: its kind, when it applies, and its text."""

    kind: str
    when: Callable[[SamplingParams, GenerationConfig], bool]
    text: Callable[[SamplingParams, GenerationConfig], str]


def _ignored_by_greedy(p: SamplingParams) -> list[str]:
    fields = ("temperature", "top_p", "top_k", "min_p")
    return [f"{name}={_fmt(getattr(p, name))}" for name in fields if getattr(p, name) != getattr(SamplingParams, name)]


def _served_defaults(base: GenerationConfig) -> dict[str, Any]:
    return {f: getattr(base, f) for f in SERVER_GENERATION_CONFIG_FIELDS if getattr(base, f, None) is not None}


NOTES = (
    Note(
        "greedy_ignores_sampling",
        lambda p, _: p.greedy and not p.do_sample and bool(_ignored_by_greedy(p)),
        lambda p, _: (
            f"do_sample=False: decoding is greedy, so {', '.join(_ignored_by_greedy(p))} "
            f"{'changes' if len(_ignored_by_greedy(p)) == 1 else 'change'} nothing here (vLLM has no do_sample: the "
            "export sends temperature=0, else vLLM would sample)."
        ),
    ),
    Note(
        "temperature_zero",
        lambda p, _: p.do_sample and p.temperature < GREEDY_TEMPERATURE,
        lambda p, _: (
            "temperature=0 means greedy (vLLM's meaning); transformers rejects temperature=0, so smolkit "
            "sends do_sample=False instead."
        ),
    ),
    Note(
        "top_k_all",
        lambda p, _: not p.greedy and p.top_k == 0,
        lambda p, _: (
            "top_k=0 (all tokens) is sent to transformers explicitly: left unset it would mean its default, "
            "50 (and transformers rejects vLLM's legacy -1)."
        ),
    ),
    Note(
        "min_p_order",
        lambda p, _: not p.greedy and p.min_p > 0 and (p.top_k > 0 or p.top_p < 1),
        lambda p, _: (
            "transformers applies min_p after top_k/top_p (the order above); vLLM applies it before them, "
            "right after temperature, so with a cut-off the two can keep different tokens "
            "(Distribution.in_vllm_order shows vLLM's result)."
        ),
    ),
    Note(
        "repetition_counts_prompt",
        lambda p, _: p.repetition_penalty != 1,
        lambda p, _: (
            f"repetition_penalty={p.repetition_penalty:g} penalises every token of the prompt as well as the "
            "generated ones (transformers and vLLM alike)."
        ),
    ),
    Note(
        "penalties_count_generated",
        lambda p, _: bool(p.presence_penalty or p.frequency_penalty),
        lambda p, _: (
            "presence/frequency penalties count only generated tokens, not the prompt (vLLM's meaning; "
            "transformers has neither: smolkit adds its own processors)."
        ),
    ),
    Note(
        "vllm_server_defaults",
        lambda _, base: bool(_served_defaults(base)),
        lambda _, base: (
            "a vLLM server for this model fills request fields left unset from its generation config: "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in _served_defaults(base).items())
            + (" (and ignores its do_sample)" if base.do_sample is not None else "")
            + "; smolkit's exports set every field."
        ),
    ),
)
"""The notes explain adds after comparing with the plain call, in order."""
