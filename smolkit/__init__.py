"""smolkit: learn how generation parameters shape what SmolVLM and SmolLM2 say, hands-on.

import smolkit
lm = smolkit.load_model()                                   # embedded SmolLM2-135M-Instruct, offline
params = smolkit.SamplingParams(temperature=0.7, top_p=0.9)  # the seed's (vLLM's) vocabulary
smolkit.next_token_distribution(lm, "The capital of France is", params).top(5)
smolkit.generate(lm, "Write a haiku about tea.", params).text
"""

from smolkit.cutoffs import cutoff_rows, kept_mass
from smolkit.distribution import Distribution, TokenProb, entropy_bits, next_token_distribution
from smolkit.doctor import doctor
from smolkit.export import ExportWarning, explain, in_vllm_order
from smolkit.generation import GenerationResult, Sample, Step, generate
from smolkit.hub_cache import cached_smolvlm, is_cached
from smolkit.images import load_image
from smolkit.models import EMBEDDED, SMOLVLM_MODELS, LoadedModel, load_model
from smolkit.params import SamplingParams
from smolkit.presets import PRESETS, preset
from smolkit.processors import FrequencyPenaltyLogitsProcessor, PresencePenaltyLogitsProcessor
from smolkit.sample_images import SAMPLE_IMAGES, sample_image
from smolkit.stages import grid_table, in_order, penalty_rows, stage_rows
from smolkit.textstats import distinct_ngram_fraction, off_top_fraction, repeated_ngram_fraction, sample_stats
from smolkit.tokens import TokenPiece, count_tokens, show_tokens, split_tokens

__version__ = "0.1.0"

__all__ = [
    "EMBEDDED",
    "PRESETS",
    "SAMPLE_IMAGES",
    "SMOLVLM_MODELS",
    "Distribution",
    "ExportWarning",
    "FrequencyPenaltyLogitsProcessor",
    "GenerationResult",
    "LoadedModel",
    "PresencePenaltyLogitsProcessor",
    "Sample",
    "SamplingParams",
    "Step",
    "TokenPiece",
    "TokenProb",
    "cached_smolvlm",
    "count_tokens",
    "cutoff_rows",
    "distinct_ngram_fraction",
    "doctor",
    "entropy_bits",
    "explain",
    "generate",
    "grid_table",
    "in_order",
    "in_vllm_order",
    "is_cached",
    "kept_mass",
    "load_image",
    "load_model",
    "next_token_distribution",
    "off_top_fraction",
    "penalty_rows",
    "preset",
    "repeated_ngram_fraction",
    "sample_image",
    "sample_stats",
    "show_tokens",
    "split_tokens",
    "stage_rows",
]
