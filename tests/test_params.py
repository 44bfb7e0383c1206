"""SamplingParams: validation with clear errors, and the faithful translation to transformers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GenerationConfig

from smolkit import SamplingParams
from smolkit.hf import processors_for, to_transformers

BAD_VALUES = [
    # (field, value, exception, words the message must contain)
    ("temperature", -0.1, ValueError, ["temperature", "-0.1", ">= 0"]),
    ("temperature", math.nan, ValueError, ["temperature", "finite"]),
    ("temperature", math.inf, ValueError, ["temperature", "finite"]),
    ("temperature", "hot", TypeError, ["temperature", "number", "'hot'"]),
    ("temperature", True, TypeError, ["temperature", "number"]),
    ("top_p", 0.0, ValueError, ["top_p", "(0, 1]", "0.0"]),
    ("top_p", 1.2, ValueError, ["top_p", "(0, 1]", "1.2"]),
    ("top_p", math.nan, ValueError, ["top_p", "finite"]),
    ("top_k", -2, ValueError, ["top_k", "-1", "-2"]),
    ("top_k", 2.5, TypeError, ["top_k", "integer", "2.5"]),
    ("top_k", 3.0, TypeError, ["top_k", "integer"]),
    ("min_p", 1.5, ValueError, ["min_p", "[0, 1]", "1.5"]),
    ("min_p", -0.1, ValueError, ["min_p", "[0, 1]"]),
    ("repetition_penalty", 0.0, ValueError, ["repetition_penalty", "> 0"]),
    ("repetition_penalty", -1.0, ValueError, ["repetition_penalty", "> 0"]),
    ("repetition_penalty", math.inf, ValueError, ["repetition_penalty", "finite"]),
    ("presence_penalty", 2.5, ValueError, ["presence_penalty", "[-2, 2]", "2.5"]),
    ("presence_penalty", math.nan, ValueError, ["presence_penalty", "finite"]),
    ("frequency_penalty", -3.0, ValueError, ["frequency_penalty", "[-2, 2]"]),
    ("max_new_tokens", 0, ValueError, ["max_new_tokens", ">= 1", "0"]),
    ("max_new_tokens", 10.0, TypeError, ["max_new_tokens", "integer"]),
    ("seed", 1.5, TypeError, ["seed", "integer", "1.5"]),
    ("seed", "42", TypeError, ["seed", "integer"]),
    ("seed", -1, ValueError, ["seed", "-1"]),
    ("seed", 2**64, ValueError, ["seed", "2**64"]),
    ("min_tokens", -1, ValueError, ["min_tokens", ">= 0"]),
    ("stop_token_ids", [1, -5], ValueError, ["stop_token_ids", "-5"]),
    ("stop_token_ids", "2", TypeError, ["stop_token_ids", "list"]),
    ("stop_token_ids", [1.5], TypeError, ["stop_token_ids", "integer"]),
    ("do_sample", "yes", TypeError, ["do_sample", "True or False"]),
    ("n", 0, ValueError, ["n", ">= 1"]),
]


@pytest.mark.parametrize(("field", "value", "error", "words"), BAD_VALUES)
def test_bad_values_raise_naming_field_and_value(field, value, error, words):
    with pytest.raises(error) as info:
        SamplingParams(**{field: value})
    for word in words:
        assert word in str(info.value), f"{word!r} missing from {info.value}"


def test_min_tokens_above_max_new_tokens_is_refused():
    with pytest.raises(ValueError, match=r"min_tokens must be <= max_new_tokens \(10\), got 11"):
        SamplingParams(max_new_tokens=10, min_tokens=11)


def test_normalised_types():
    params = SamplingParams(temperature=1, top_p=1, stop_token_ids=[5, 5, torch.tensor(7)], seed=torch.tensor(3))
    assert isinstance(params.temperature, float) and isinstance(params.top_p, float)
    assert params.stop_token_ids == (5, 7)
    assert params.seed == 3 and isinstance(params.seed, int)


def test_replace_validates_again():
    params = SamplingParams(temperature=0.7)
    assert params.replace(top_p=0.5).top_p == 0.5
    assert params.replace(top_p=0.5).temperature == 0.7
    with pytest.raises(ValueError, match="top_p"):
        params.replace(top_p=2.0)


@pytest.mark.parametrize(
    ("kwargs", "greedy"),
    [
        ({}, False),
        ({"temperature": 0.0}, True),
        ({"temperature": 5e-6}, True),
        ({"temperature": 1e-5}, False),
        ({"do_sample": False, "temperature": 0.9}, True),
    ],
)
def test_greedy_follows_vllm(kwargs, greedy):
    assert SamplingParams(**kwargs).greedy is greedy


def test_translation_of_every_field():
    params = SamplingParams(
        max_new_tokens=12,
        temperature=0.5,
        top_p=0.8,
        top_k=-1,
        min_p=0.05,
        repetition_penalty=1.3,
        presence_penalty=0.4,
        frequency_penalty=0.2,
        min_tokens=3,
        stop_token_ids=[13, 2],
    )
    gc, procs = to_transformers(params, prompt_length=9, eos_token_id=2, pad_token_id=2)
    assert gc.do_sample is True
    assert gc.temperature == 0.5 and isinstance(gc.temperature, float)
    assert gc.top_k == 0  # -1 (all tokens) reaches transformers as 0
    assert gc.top_p == 0.8 and gc.min_p == 0.05 and gc.repetition_penalty == 1.3
    assert gc.max_new_tokens == 12 and gc.min_new_tokens == 3
    assert gc.eos_token_id == [2, 13]  # the model's EOS first, stop tokens added, no duplicate
    assert [type(p).__name__ for p in procs] == ["PresencePenaltyLogitsProcessor", "FrequencyPenaltyLogitsProcessor"]
    assert all(p.prompt_length == 9 for p in procs)
    gc.validate(strict=True)  # transformers accepts what the kit produces


def test_greedy_translation_sets_no_sampling_fields():
    gc, procs = to_transformers(SamplingParams(temperature=0.0, top_k=5), prompt_length=1, eos_token_id=[2])
    assert gc.do_sample is False and gc.temperature is None and gc.top_k is None
    assert len(procs) == 0


def test_model_defaults_do_not_leak(lm):
    """transformers fills unset fields from the model's config and then its defaults (top_k=50): not ours."""
    ids = torch.tensor([[1, 2, 3]])
    procs = processors_for(lm, SamplingParams(temperature=0.9), ids, 3)
    assert [type(p).__name__ for p in procs] == ["TemperatureLogitsWarper"]
    # The same model with a generation config that switches stages on: the kit switches them off again.
    saved = lm.model.generation_config
    lm.model.generation_config = GenerationConfig(
        top_k=20, top_p=0.5, min_p=0.2, repetition_penalty=1.5, eos_token_id=2
    )
    try:
        procs = processors_for(lm, SamplingParams(temperature=0.9), ids, 3)
        names = [type(p).__name__ for p in procs]
        assert "TopKLogitsWarper" not in names and "TopPLogitsWarper" not in names
        assert "RepetitionPenaltyLogitsProcessor" not in names
        minp = [p for p in procs if type(p).__name__ == "MinPLogitsWarper"]
        assert all(p.min_p == 0.0 for p in minp)
    finally:
        lm.model.generation_config = saved


def test_plain_transformers_would_apply_top_k_50(lm):
    """The pitfall the kit avoids: an unset top_k becomes 50 inside generate."""
    gc, _ = lm.model._prepare_generation_config(GenerationConfig(do_sample=True))
    assert gc.top_k == 50


def test_stop_ids_outside_vocabulary():
    params = SamplingParams(stop_token_ids=[5, 60000])
    with pytest.raises(ValueError, match=r"stop_token_ids must be in \[0, 49151\].*60000"):
        params.check_vocab(49152)
    params.check_vocab(60001)


valid_params = st.builds(
    SamplingParams,
    max_new_tokens=st.integers(1, 512),
    do_sample=st.booleans(),
    temperature=st.floats(0, 5),
    top_p=st.floats(0, 1, exclude_min=True),
    top_k=st.integers(-1, 1000),
    min_p=st.floats(0, 1),
    repetition_penalty=st.floats(0.01, 5),
    presence_penalty=st.floats(-2, 2),
    frequency_penalty=st.floats(-2, 2),
    seed=st.none() | st.integers(0, 2**64 - 1),
    stop_token_ids=st.lists(st.integers(0, 49151), max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(valid_params)
def test_every_valid_preset_translates_to_a_valid_generation_config(params):
    gc, procs = to_transformers(params, prompt_length=4, eos_token_id=2)
    gc.validate(strict=False)
    assert gc.do_sample is (not params.greedy)
    if not params.greedy:
        assert gc.top_k == max(params.top_k, 0) and gc.top_k >= 0
        assert isinstance(gc.temperature, float) and gc.temperature > 0
    assert 2 in gc.eos_token_id and set(params.stop_token_ids) <= set(gc.eos_token_id)
    assert len(procs) == (params.presence_penalty != 0) + (params.frequency_penalty != 0)
    assert SamplingParams(**params.to_dict()) == params
