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
from smolkit.generation import GenerationResult, Sample, Step, generate
from smolkit.images import load_image
from smolkit.models import EMBEDDED, SMOLVLM_MODELS, LoadedModel, load_model
from smolkit.params import SamplingParams
from smolkit.processors import FrequencyPenaltyLogitsProcessor, PresencePenaltyLogitsProcessor
from smolkit.tokens import TokenPiece, count_tokens, show_tokens, split_tokens

__version__ = "0.1.0"

__all__ = [
    "EMBEDDED",
    "SMOLVLM_MODELS",
    "Distribution",
    "FrequencyPenaltyLogitsProcessor",
    "GenerationResult",
    "LoadedModel",
    "PresencePenaltyLogitsProcessor",
    "Sample",
    "SamplingParams",
    "Step",
    "TokenPiece",
    "TokenProb",
    "count_tokens",
    "cutoff_rows",
    "doctor",
    "entropy_bits",
    "generate",
    "kept_mass",
    "load_image",
    "load_model",
    "next_token_distribution",
    "show_tokens",
    "split_tokens",
]
