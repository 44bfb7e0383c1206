"""Numbers that describe generated text: how much it repeats itself, how different the samples are, how often the
sampler left the model's favourites.

They turn "this looks repetitive" or "these samples are all alike" into a number a notebook can print (and nbval
can compare), and they work on token ids, so they measure what the model produced, not how it was detokenised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from smolkit import _checks
from smolkit.generation import GenerationResult

__all__ = ["distinct_ngram_fraction", "off_top_fraction", "repeated_ngram_fraction", "sample_stats", "shared_start"]


def _ngrams(ids: Sequence[int], n: int, name: str = "token_ids") -> list[tuple[int, ...]]:
    n = _checks.integer("n", n, lo=1)
    ids = _checks.token_ids(name, ids)
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


def repeated_ngram_fraction(token_ids: Sequence[int], n: int = 3) -> float:
    """Share of the ``n``-grams (runs of n tokens) of one text that already occurred earlier in it.

    0 means no run of ``n`` tokens comes back; near 1 means the text is a loop. Texts shorter than ``n`` give 0.

    >>> repeated_ngram_fraction([1, 2, 3, 4, 5])
    0.0
    >>> repeated_ngram_fraction([1, 2, 3, 1, 2, 3, 1, 2, 3], n=3)  # 7 3-grams, the last 4 are repeats
    0.5714285714285714
    """
    grams = _ngrams(token_ids, n)
    if not grams:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


def shared_start(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many items two sequences share at their start: tokens of two samples, or words (``text.split()``) of two
    answers. A sentence that says where two outputs part is then computed, not read off one run.

    >>> shared_start([5, 6, 7, 8], [5, 6, 9]), shared_start("Cats are small".split(), "Dogs are".split())
    (2, 0)
    """
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def distinct_ngram_fraction(samples: Sequence[Sequence[int]], n: int = 3) -> float:
    """Diversity of several samples: distinct ``n``-grams over all ``n``-grams, pooled across the samples.

    1 means no run of ``n`` tokens is shared or repeated; identical samples give about 1 / (number of samples).

    >>> distinct_ngram_fraction([[1, 2, 3, 4], [1, 2, 3, 4]], n=2)  # 6 bigrams, 3 distinct
    0.5
    >>> distinct_ngram_fraction([[1, 2, 3], [4, 5, 6]], n=2)
    1.0
    """
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Iterable):
        raise TypeError(f"samples must be a list of token id lists, got {_checks.describe(samples)}")
    grams = [g for i, ids in enumerate(samples) for g in _ngrams(ids, n, f"samples[{i}]")]
    return len(set(grams)) / len(grams) if grams else 0.0


def off_top_fraction(result: GenerationResult, k: int = 5) -> float:
    """Share of generated tokens (over all samples) that were not among the model's ``k`` favourites at their step.

    The rank is read under the model's raw logits (``Step.rank``, 0 = its first choice): a high share means the
    sampler often picked tokens the model itself rated as unlikely, which is where incoherent text comes from.
    """
    k = _checks.integer("k", k, lo=1)
    steps = [step for sample in result.samples for step in sample.steps]
    return sum(step.rank >= k for step in steps) / len(steps) if steps else 0.0


def sample_stats(result: GenerationResult, n: int = 3, k: int = 5) -> dict[str, float]:
    """A row of numbers for a set of samples: mean length in tokens, diversity across the samples
    (``distinct_ngram_fraction``), mean repetition within a sample (``repeated_ngram_fraction``) and the share of
    tokens outside the model's top ``k`` (``off_top_fraction``). Print rows with ``format_rows``."""
    ids = [sample.token_ids for sample in result.samples]
    return {
        "tokens": sum(len(i) for i in ids) / len(ids),
        f"distinct {n}-grams": distinct_ngram_fraction(ids, n),
        f"repeated {n}-grams": sum(repeated_ngram_fraction(i, n) for i in ids) / len(ids),
        f"off top-{k}": off_top_fraction(result, k),
    }
