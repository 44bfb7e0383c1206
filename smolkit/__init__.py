"""smolkit: learn how generation parameters shape what SmolVLM and SmolLM2 say, hands-on.

import smolkit
lm = smolkit.load_model()                                   # embedded SmolLM2-135M-Instruct, offline
params = smolkit.SamplingParams(temperature=0.7, top_p=0.9)  # vLLM's vocabulary
smolkit.next_token_distribution(lm, "The capital of France is", params).top(5)
smolkit.generate(lm, "Write a haiku about tea.", params).text

The names below are the whole public API: what the notebooks and the README use. Everything else is internal.
"""

import importlib

from smolkit.advice import FACTUAL_QUESTIONS, README_ADVICE, advice_rows, load_advice, measure_factual
from smolkit.beams import beam_search, beam_snippet, beam_tree
from smolkit.distribution import Distribution, next_token_distribution
from smolkit.doctor import doctor
from smolkit.embedded import embedded_folder
from smolkit.engines import (
    ENGINES,
    defaults_rows,
    engine_rows,
    in_engine,
    logprob_flags,
    logprob_lens,
    received_params,
)
from smolkit.exercises import check_exercise
from smolkit.explain import explain
from smolkit.export import ExportWarning, to_openai, to_vllm
from smolkit.generation import GenerationResult, generate
from smolkit.hf import to_transformers
from smolkit.hub_cache import cached_smolvlm
from smolkit.image_tokens import SMOLVLM_256M, image_prompt, image_token_rows, prefill_seconds
from smolkit.importers import from_generation_config, from_model_defaults, from_openai
from smolkit.llamacpp import LlamaServer, engine_distances, llama_distribution
from smolkit.llamacpp import available as llama_cpp_available
from smolkit.models import LoadedModel, load_model
from smolkit.params import SamplingParams
from smolkit.presets import PRESETS, preset
from smolkit.processors import FrequencyPenaltyLogitsProcessor, PresencePenaltyLogitsProcessor
from smolkit.sample_images import SAMPLE_IMAGES, sample_image
from smolkit.sequences import (
    HUMAN_TEXT,
    logprob_rows,
    perplexity_rows,
    score_continuation,
    server_logprobs,
    tail_chance,
    tail_rows,
)
from smolkit.snippets import snippet
from smolkit.tables import format_rows, grid_table, penalty_rows, stage_rows, sweep
from smolkit.textstats import repeated_ngram_fraction, sample_stats, shared_start
from smolkit.tokens import count_tokens, show_tokens

__version__ = "0.1.0"

_LAZY = {
    **dict.fromkeys(
        ("plot_beam_tree", "plot_cumulative", "plot_distribution", "plot_entropy_vs_temperature", "plot_heatmap",
         "plot_engines", "plot_stages", "plot_steps", "plot_tail", "plot_token_logprobs"), "smolkit.viz"),
    **dict.fromkeys(("BeamExplorer", "DistributionExplorer", "LiveSamples", "StepExplorer"), "smolkit.widgets"),
}  # fmt: skip
"""Figures and explorers, imported on first use: matplotlib and ipywidgets stay out of the command line and of
every script that plots nothing (importing matplotlib also writes its config folder under HOME)."""


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'smolkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [  # noqa: RUF022 (grouped by purpose, as the README lists them)
    # models and parameters
    "LoadedModel",
    "SamplingParams",
    "load_model",
    "embedded_folder",
    "PRESETS",
    "preset",
    # the source README's advice, measured
    "README_ADVICE",
    "FACTUAL_QUESTIONS",
    "load_advice",
    "advice_rows",
    "measure_factual",
    # the next token, its stages, and tables of their numbers
    "Distribution",
    "next_token_distribution",
    "format_rows",
    "grid_table",
    "penalty_rows",
    "stage_rows",
    "sweep",
    # generating, and numbers about what was generated
    "GenerationResult",
    "generate",
    "repeated_ngram_fraction",
    "sample_stats",
    "shared_start",
    # whole sequences: their probability, beam search, the tail, server logprobs
    "score_continuation",
    "beam_search",
    "beam_tree",
    "plot_token_logprobs",
    "plot_beam_tree",
    "BeamExplorer",
    "perplexity_rows",
    "HUMAN_TEXT",
    "tail_rows",
    "tail_chance",
    "plot_tail",
    "server_logprobs",
    "logprob_rows",
    "beam_snippet",
    # tokens
    "count_tokens",
    "show_tokens",
    # figures and explorers, as the notebooks meet them
    "plot_distribution",
    "StepExplorer",
    "DistributionExplorer",
    "plot_entropy_vs_temperature",
    "LiveSamples",
    "plot_cumulative",
    "plot_stages",
    "plot_heatmap",
    "plot_steps",
    # to and from serving stacks
    "ExportWarning",
    "FrequencyPenaltyLogitsProcessor",
    "PresencePenaltyLogitsProcessor",
    "explain",
    "from_generation_config",
    "from_model_defaults",
    "from_openai",
    "snippet",
    "to_openai",
    "to_transformers",
    "to_vllm",
    # one preset, several engines (notebook 13)
    "ENGINES",
    "in_engine",
    "engine_rows",
    "defaults_rows",
    "plot_engines",
    "logprob_lens",
    "logprob_flags",
    "received_params",
    "llama_cpp_available",
    "llama_distribution",
    "engine_distances",
    "LlamaServer",
    # images, set-up, exercises
    "SAMPLE_IMAGES",
    "cached_smolvlm",
    "sample_image",
    "SMOLVLM_256M",
    "image_token_rows",
    "image_prompt",
    "prefill_seconds",
    "doctor",
    "check_exercise",
]
