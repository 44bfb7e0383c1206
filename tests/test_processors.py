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
    with pytest.raises(ValueError, match="prompt_length must be an int >= 0, got -1"):
        PresencePenaltyLogitsProcessor(1.0, prompt_length=-1)


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
