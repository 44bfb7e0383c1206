"""The distribution the kit shows is the one generate samples from, stage by stage, on the real embedded model."""

from __future__ import annotations

import pytest
import torch
from conftest import PROMPT

from smolkit import Distribution, SamplingParams, generate, next_token_distribution
from smolkit.distribution import entropy_bits, is_probability_vector
from smolkit.hf import to_transformers

PARITY_PARAMS = [
    SamplingParams(),
    SamplingParams(temperature=0.7),
    SamplingParams(temperature=1.4, top_k=-1),
    SamplingParams(temperature=0.8, top_p=0.9),
    SamplingParams(top_k=5),
    SamplingParams(temperature=0.6, top_k=40, top_p=0.95, min_p=0.05),
    SamplingParams(repetition_penalty=1.5, temperature=0.9),
    SamplingParams(repetition_penalty=0.7),
    SamplingParams(presence_penalty=1.5, frequency_penalty=0.5, temperature=0.8),
    SamplingParams(presence_penalty=-1.0, top_p=0.8),
    SamplingParams(min_tokens=3, temperature=0.9, stop_token_ids=[30]),
    SamplingParams(temperature=0.0, repetition_penalty=1.3, presence_penalty=0.5),
    SamplingParams(do_sample=False, min_tokens=2),
    SamplingParams(min_p=0.1, temperature=1.5),
]


def _generate_with_scores(lm, params, steps=5):
    result = generate(lm, PROMPT, params.replace(max_new_tokens=steps, seed=params.seed or 0))
    return result


@pytest.mark.parametrize("params", PARITY_PARAMS, ids=repr)
def test_probs_equal_generates_processed_scores(lm, params):
    """At every step, the kit's final distribution for that prefix is softmax(generate's output_scores)."""
    inputs = lm.inputs(PROMPT)
    prompt_ids = inputs["input_ids"]
    gc, procs = to_transformers(
        params.replace(max_new_tokens=5), eos_token_id=lm.eos_token_ids, pad_token_id=lm.pad_token_id
    )
    gc.update(output_scores=True, output_logits=True, return_dict_in_generate=True)
    torch.manual_seed(0)
    with torch.inference_mode():
        out = lm.model.generate(**inputs, generation_config=gc, logits_processor=procs)
    new = out.sequences[0, prompt_ids.shape[1] :].tolist()
    for t, (raw, processed) in enumerate(zip(out.logits, out.scores, strict=True)):
        prefix = out.sequences[:, : prompt_ids.shape[1] + t]
        # Same raw logits in, same stages: identical to what generate sampled from.
        dist = Distribution.from_logits(lm, params, raw[0], prefix, prompt_ids.shape[1])
        expected = torch.softmax(processed[0].float(), dim=-1)
        if params.greedy:
            assert dist.probs.argmax() == expected.argmax() == new[t]
            assert dist.probs.max() == 1.0 and dist.surviving() == 1
            last_stage = list(dist.stages)[-3]  # before "greedy" and "final"
            torch.testing.assert_close(dist.stages[last_stage], expected, rtol=0, atol=1e-6)
        else:
            torch.testing.assert_close(dist.probs, expected, rtol=0, atol=1e-6)
            assert dist.probs[new[t]] > 0
        # And the kit's own forward pass (no KV cache) gives the same logits as generate's cached decoding.
        own = next_token_distribution(lm, PROMPT, params, generated=new[:t])
        torch.testing.assert_close(own.logits, raw[0].float(), rtol=0, atol=2e-3)


def test_stage_order_is_generates_order(lm):
    params = SamplingParams(
        temperature=0.7,
        top_k=20,
        top_p=0.9,
        min_p=0.05,
        repetition_penalty=1.2,
        presence_penalty=0.3,
        frequency_penalty=0.1,
        min_tokens=2,
    )
    dist = next_token_distribution(lm, PROMPT, params)
    assert list(dist.stages) == [
        "raw", "repetition_penalty", "min_length", "min_tokens", "presence_penalty", "frequency_penalty",
        "temperature", "top_k", "top_p", "min_p", "final",
    ]  # fmt: skip
    assert dist.probs is dist.stages["min_p"]


def test_every_stage_is_a_probability_vector_over_the_whole_vocabulary(lm):
    dist = next_token_distribution(lm, PROMPT, SamplingParams(temperature=0.5, top_p=0.5, presence_penalty=2))
    for name, probs in dist.stages.items():
        assert probs.shape == (lm.vocab_size,), name
        assert is_probability_vector(probs), name
    assert dist.surviving("raw") == lm.vocab_size
    assert 1 <= dist.surviving() < 100


def test_changing_params_reuses_the_cached_logits(lm, model_work):
    with model_work(lm) as work:
        lm.clear_cache()
        dist = next_token_distribution(lm, "Once upon a time", SamplingParams())
        assert work.calls == 1
        for t in (0.2, 0.7, 1.5):
            dist.with_params(temperature=t, top_k=10)
            next_token_distribution(lm, "Once upon a time", SamplingParams(temperature=t))
        assert work.calls == 1
        next_token_distribution(lm, "Once upon a time", SamplingParams(), generated=" there")
        assert work.calls == 2


def test_temperature_reshapes_as_documented(lm):
    dist = next_token_distribution(lm, PROMPT, SamplingParams())
    cold, hot = dist.with_params(temperature=0.3), dist.with_params(temperature=1.8)
    assert cold.entropy < dist.entropy < hot.entropy
    assert cold.top(1)[0].id == dist.top(1)[0].id == hot.top(1)[0].id
    expected = torch.softmax(dist.logits / 0.3, dim=-1)
    torch.testing.assert_close(cold.probs, expected, rtol=0, atol=1e-6)


def test_top_k_and_top_p_cut_offs(lm):
    dist = next_token_distribution(lm, "Once upon a time", SamplingParams())
    assert dist.with_params(top_k=7).surviving() == 7
    assert dist.with_params(top_k=-1).surviving() == dist.with_params(top_k=0).surviving() == lm.vocab_size
    nucleus = dist.with_params(top_p=0.5)
    kept = nucleus.probs > 0
    raw_sorted = dist.probs.sort(descending=True).values
    n = int(kept.sum())
    # The smallest set of top tokens with mass >= top_p: one token fewer would not reach 0.5.
    assert raw_sorted[:n].sum() >= 0.5 - 1e-6 and raw_sorted[: n - 1].sum() < 0.5
    assert torch.equal(kept, dist.probs >= raw_sorted[n - 1])


def test_surviving_counts_cuts_not_float_underflow(lm):
    """A low temperature drives most probabilities to 0.0 in float32 (a count that moves from CPU to CPU); only a
    filter removes tokens, so surviving and kept_mass count the cuts, and the top list still shows no zero."""
    dist = next_token_distribution(lm, "Once upon a time", SamplingParams())
    cold = dist.with_params(temperature=0.05)
    assert int((cold.probs > 0).sum()) < lm.vocab_size // 2  # underflow: most tokens print as exactly 0
    assert cold.surviving() == lm.vocab_size and cold.kept_mass() == pytest.approx(1.0, abs=1e-4)  # float32 sum
    assert all(t.prob > 0 for t in cold.top(lm.vocab_size))
    cut = dist.with_params(temperature=0.05, top_k=40)
    assert cut.surviving() == 40 and cut.surviving("temperature") == lm.vocab_size
    assert cut.kept_mass() == pytest.approx(float(dist.probs.topk(40).values.double().sum()), abs=1e-6)


def test_min_tokens_blocks_eos_and_stop_tokens_until_reached(lm):
    eos = lm.eos_token_ids[0]
    stop = lm.tokenizer.convert_tokens_to_ids(".")
    params = SamplingParams(min_tokens=3, stop_token_ids=[stop])
    early = next_token_distribution(lm, PROMPT, params, generated=[504, 3575])  # two tokens generated
    assert early.prob_of(eos) == 0 and early.prob_of(stop) == 0
    assert early.prob_of(eos, "raw") >= 0
    later = next_token_distribution(lm, PROMPT, params, generated=[504, 3575, 282])
    assert "min_tokens" in later.stages and later.prob_of(stop) > 0


def test_presence_penalty_lowers_generated_tokens_only(lm):
    base = next_token_distribution(lm, PROMPT, SamplingParams(), generated=" Paris is Paris")
    pen = base.with_params(presence_penalty=2.0)
    paris = lm.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    france = lm.tokenizer(" France", add_special_tokens=False)["input_ids"][0]  # only in the prompt
    shifted = torch.log(pen.stages["presence_penalty"]) - torch.log(base.stages["raw"])
    shifted = shifted - shifted[france]  # remove the normalisation constant
    assert shifted[paris].item() == pytest.approx(-2.0, abs=1e-4)
    assert shifted[france].item() == 0.0


def test_repetition_penalty_is_multiplicative_and_counts_the_prompt(lm):
    base = next_token_distribution(lm, PROMPT, SamplingParams())
    penalised = base.with_params(repetition_penalty=2.0)
    france = lm.tokenizer(" France", add_special_tokens=False)["input_ids"][0]
    assert penalised.prob_of(france) < base.prob_of(france)
    logit = base.logits[france]
    scores = torch.log(penalised.stages["repetition_penalty"])
    expected = logit / 2 if logit > 0 else logit * 2
    unseen = lm.tokenizer(" banana", add_special_tokens=False)["input_ids"][0]
    assert (scores[france] - scores[unseen]).item() == pytest.approx(float(expected - base.logits[unseen]), abs=1e-3)


def test_greedy_and_top_k_1_are_one_hot(lm):
    dist = next_token_distribution(lm, PROMPT, SamplingParams(temperature=0))
    assert dist.surviving() == 1 and dist.probs.max() == 1.0 and dist.entropy == 0.0
    assert dist.with_params(temperature=1.0, top_k=1).probs.argmax() == dist.probs.argmax()


def test_top_summary_and_entropy(lm):
    dist = next_token_distribution(lm, PROMPT, SamplingParams(top_k=3))
    top = dist.top(10)
    assert len(top) == 3  # never a zero-probability token
    assert [t.prob for t in top] == sorted((t.prob for t in top), reverse=True)
    assert sum(t.prob for t in top) == pytest.approx(1.0, abs=1e-5)
    assert dist.summary(3).startswith("top 3: ")
    assert "surviving tokens: 3" in dist.summary(3)
    assert entropy_bits(torch.tensor([0.25] * 4)) == 2.0


def test_bad_inputs_fail_before_model_work(lm, model_work):
    with model_work(lm) as work:
        with pytest.raises(ValueError, match="prompt is empty"):
            next_token_distribution(lm, "   ", SamplingParams())
        with pytest.raises(TypeError, match=r"params must be a smolkit\.SamplingParams"):
            next_token_distribution(lm, PROMPT, {"temperature": 0.5})
        with pytest.raises(ValueError, match="stop_token_ids must be in"):
            next_token_distribution(lm, PROMPT, SamplingParams(stop_token_ids=[10**6]))
        with pytest.raises(ValueError, match="is text-only"):
            next_token_distribution(lm, PROMPT, SamplingParams(), image="whatever.png")
        with pytest.raises(ValueError, match="stage must be one of"):
            next_token_distribution(lm, "Hello", SamplingParams()).top(3, stage="nonsense")
        assert work.calls == 1  # only the last, valid call ran the model


@pytest.mark.slow
def test_what_notebook_09_says_of_its_stages_and_its_grid(lm):
    """The sentences of notebook 09 (sections 2 and 4) that read its outputs, held here so that regenerated outputs
    cannot leave them behind: the repetition penalty lowers " dragon" (it is in the prompt); at top_p 0.9 the table
    keeps the three nearly tied favourites at T 0.3 and thousands at T 2; no cell keeps a single token, and top_p
    0.5 at T 0.3 keeps two."""
    params = SamplingParams(repetition_penalty=1.1, presence_penalty=0.5, temperature=0.8, top_k=50, top_p=0.9,
                            min_p=0.05)  # fmt: skip
    dist = next_token_distribution(lm, "Write a short story about a dragon.", params,
                                   generated="Once upon a time, there was a")  # fmt: skip
    dragon = lm.tokenizer.encode(" dragon")[0]
    assert dist.prob_of(dragon, "repetition_penalty") < dist.prob_of(dragon, "raw")
    plain = dist.with_params(SamplingParams())
    assert [t.token for t in plain.top(3)] == [" brave", " magnificent", " dragon"]

    def kept(temperature: float, top_p: float) -> int:
        return plain.with_params(temperature=temperature, top_p=top_p).surviving()

    assert kept(0.3, 0.9) == 3 and kept(2.0, 0.9) >= 1000
    grid = [kept(t, p) for t in (0.3, 0.5, 0.7, 1.0, 1.3, 1.6, 2.0) for p in (0.5, 0.8, 0.9, 0.95, 1.0)]
    assert min(grid) == kept(0.3, 0.5) == 2
