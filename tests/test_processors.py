"""Presence and frequency penalties: vLLM's formulas, generated tokens only, batch rows independent."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smolkit import FrequencyPenaltyLogitsProcessor, PresencePenaltyLogitsProcessor


def reference(input_ids, scores, prompt_length, presence, frequency):
    """Straight from vLLM's description, one token at a time."""
    out = scores.clone()
    for row in range(input_ids.shape[0]):
        generated = input_ids[row, prompt_length:].tolist()
        for token in set(generated):
            out[row, token] -= presence + frequency * generated.count(token)
    return out


def test_prompt_tokens_do_not_count():
    ids = torch.tensor([[7, 7, 7, 1]])  # prompt: three 7s; generated: one 1
    scores = torch.zeros(1, 8)
    out = PresencePenaltyLogitsProcessor(1.0, prompt_length=3)(ids, scores)
    assert out[0, 7] == 0 and out[0, 1] == -1


def test_presence_is_flat_and_frequency_grows():
    ids = torch.tensor([[0, 3, 3, 3, 5]])
    scores = torch.zeros(1, 6)
    presence = PresencePenaltyLogitsProcessor(0.5, prompt_length=1)(ids, scores)
    frequency = FrequencyPenaltyLogitsProcessor(0.5, prompt_length=1)(ids, scores)
    assert presence[0].tolist() == [0, 0, 0, -0.5, 0, -0.5]
    assert frequency[0].tolist() == [0, 0, 0, -1.5, 0, -0.5]


def test_negative_penalties_encourage_repeats():
    ids = torch.tensor([[0, 4]])
    out = PresencePenaltyLogitsProcessor(-1.0, prompt_length=1)(ids, torch.zeros(1, 5))
    assert out[0, 4] == 1.0


def test_scores_are_not_modified_in_place():
    scores = torch.zeros(1, 4)
    PresencePenaltyLogitsProcessor(1.0, prompt_length=0)(torch.tensor([[1]]), scores)
    assert scores.abs().sum() == 0


@pytest.mark.parametrize("cls", [PresencePenaltyLogitsProcessor, FrequencyPenaltyLogitsProcessor])
@pytest.mark.parametrize(
    ("value", "error", "match"),
    [(2.1, ValueError, r"\[-2, 2\].*2.1"), (float("nan"), ValueError, "nan"), ("1", TypeError, "number")],
)
def test_arguments_are_validated(cls, value, error, match):
    with pytest.raises(error, match=match):
        cls(value, prompt_length=0)


def test_prompt_length_is_validated():
    with pytest.raises(ValueError, match="prompt_length must be an integer >= 0, got -1"):
        PresencePenaltyLogitsProcessor(1.0, prompt_length=-1)
    with pytest.raises(TypeError, match=r"prompt_length must be an integer, got 2\.0"):
        PresencePenaltyLogitsProcessor(1.0, prompt_length=2.0)


def test_one_processor_finds_where_each_prompt_ends():
    """Without prompt_length, the first call of a generation is the prompt; each later call adds one token per row;
    any other call (another prompt, another batch) starts a new generation."""
    proc = FrequencyPenaltyLogitsProcessor(1.0)
    zeros = torch.zeros(2, 6)
    first = torch.tensor([[1, 1, 2], [1, 1, 2]])  # a prompt that repeats token 1: the prompt does not count
    assert proc(first, zeros).tolist() == [[0.0] * 6] * 2
    step = torch.cat([first, torch.tensor([[1], [3]])], dim=1)
    assert proc(step, zeros).tolist() == [[0, -1, 0, 0, 0, 0], [0, 0, 0, -1, 0, 0]]
    step2 = torch.cat([step, torch.tensor([[1], [3]])], dim=1)
    assert proc(step2, zeros).tolist() == [[0, -2, 0, 0, 0, 0], [0, 0, 0, -2, 0, 0]]
    other = torch.tensor([[4, 4, 4, 4, 4]])  # a new, longer prompt: nothing generated yet
    assert proc(other, torch.zeros(1, 6)).tolist() == [[0.0] * 6]
    assert proc(torch.tensor([[4, 4, 4, 4, 4, 5]]), torch.zeros(1, 6)).tolist() == [[0, 0, 0, 0, 0, -1]]


@settings(max_examples=100, deadline=None)
@given(
    ids=st.lists(st.lists(st.integers(0, 9), min_size=6, max_size=6), min_size=1, max_size=3),
    prompt_length=st.integers(0, 6),
    presence=st.floats(-2, 2),
    frequency=st.floats(-2, 2),
)
def test_matches_reference_on_any_batch(ids, prompt_length, presence, frequency):
    input_ids = torch.tensor(ids)
    scores = torch.randn(input_ids.shape[0], 10)
    out = FrequencyPenaltyLogitsProcessor(frequency, prompt_length)(
        input_ids, PresencePenaltyLogitsProcessor(presence, prompt_length)(input_ids, scores)
    )
    torch.testing.assert_close(out, reference(input_ids, scores, prompt_length, presence, frequency))
