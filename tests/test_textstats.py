"""textstats: repetition, diversity and off-favourite measures of generated tokens."""

from __future__ import annotations

import pytest

from smolkit import SamplingParams
from smolkit.generation import GenerationResult, Sample, Step
from smolkit.textstats import distinct_ngram_fraction, off_top_fraction, repeated_ngram_fraction, sample_stats


def _result(ranks_per_sample):
    samples = tuple(
        Sample(
            "", tuple(range(len(ranks))), tuple(Step(i, i, "", 0.5, r, 1.0, ()) for i, r in enumerate(ranks)), "length"
        )
        for ranks in ranks_per_sample
    )
    return GenerationResult("p", SamplingParams(), samples, 3, 0.1, "transformers")


def test_repeated_ngram_fraction():
    assert repeated_ngram_fraction([7, 7, 7, 7], n=1) == 0.75
    assert repeated_ngram_fraction([1, 2, 1, 2, 1, 2], n=2) == 0.6  # 12 21 [12 21 12]
    assert repeated_ngram_fraction([1, 2], n=3) == 0.0
    assert repeated_ngram_fraction(range(100)) == 0.0
    with pytest.raises(ValueError, match="n must"):
        repeated_ngram_fraction([1, 2, 3], n=0)


def test_distinct_ngram_fraction_pools_samples():
    assert distinct_ngram_fraction([[1, 2, 3]] * 4, n=3) == 0.25
    assert distinct_ngram_fraction([[1, 2, 3], [3, 2, 1]], n=3) == 1.0
    assert distinct_ngram_fraction([[1], [2]], n=2) == 0.0


def test_off_top_fraction_counts_ranks_at_or_beyond_k():
    result = _result([[0, 1, 5, 9], [0, 4, 0, 0]])
    assert off_top_fraction(result, k=5) == 2 / 8
    assert off_top_fraction(result, k=1) == 4 / 8
    assert off_top_fraction(result, k=10) == 0.0
    assert off_top_fraction(_result([[]])) == 0.0
    with pytest.raises(ValueError, match="k must"):
        off_top_fraction(result, k=0)


def test_sample_stats_combines_the_measures():
    result = _result([[0, 7, 0, 0], [0, 0, 0, 9]])
    stats = sample_stats(result, n=2, k=5)
    ids = [s.token_ids for s in result.samples]
    assert stats == {
        "tokens": 4.0,
        "distinct 2-grams": distinct_ngram_fraction(ids, 2),
        "repeated 2-grams": 0.0,
        "off top-5": 2 / 8,
    }


def test_greedy_loops_score_higher_than_penalised_text(lm):
    """The measure sees what a reader sees: greedy decoding of this prompt loops; a repetition penalty breaks it."""
    from smolkit import generate

    prompt = "Write a poem about the sea."
    looped = generate(lm, prompt, SamplingParams(temperature=0, max_new_tokens=48))
    broken = generate(lm, prompt, SamplingParams(temperature=0, max_new_tokens=48, repetition_penalty=1.3))
    assert repeated_ngram_fraction(looped.token_ids) > repeated_ngram_fraction(broken.token_ids)
