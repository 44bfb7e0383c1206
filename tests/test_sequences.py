"""sequences and beams: continuation log-probabilities, perplexity, the tail, server logprobs, and beam search
checked against transformers' own scores."""

from __future__ import annotations

import math

import pytest
from conftest import PROMPT

from smolkit import SamplingParams, generate, generation, next_token_distribution
from smolkit.beams import LENGTH_PENALTY_RANGE, beam_search, beam_snippet, beam_tree
from smolkit.sequences import (
    HUMAN_TEXT,
    logprob_rows,
    perplexity_rows,
    score_continuation,
    server_logprobs,
    tail_chance,
    tail_rows,
)


def test_a_continuation_scores_token_by_token_as_the_next_token_distribution(lm):
    """Each token's probability is the one next_token_distribution gives after the tokens before it."""
    score = score_continuation(lm, PROMPT, "The capital of France is Paris.")
    ids = [t.token_id for t in score.tokens]
    for i, token in enumerate(score.tokens[:4]):
        dist = next_token_distribution(lm, PROMPT, generated=ids[:i])
        assert token.prob == pytest.approx(dist.prob_of(token.token_id, "raw"), rel=1e-4, abs=1e-7)
        assert [t.id for t in dist.top(token.rank + 1, "raw")][token.rank] == token.token_id
    assert score.logprob == pytest.approx(sum(t.logprob for t in score.tokens))
    assert score.perplexity == pytest.approx(math.exp(-score.logprob / len(score)))
    assert score.rows(2)[1]["sum"] == pytest.approx(score.tokens[0].logprob + score.tokens[1].logprob)


def test_a_likely_answer_scores_higher_than_an_unlikely_one(lm):
    right = score_continuation(lm, PROMPT, "The capital of France is Paris.")
    wrong = score_continuation(lm, PROMPT, "The capital of France is Madrid.")
    assert right.logprob > wrong.logprob
    with pytest.raises(ValueError, match="continuation is empty"):
        score_continuation(lm, PROMPT, "")


def test_greedy_text_is_less_surprising_than_hot_samples_and_the_reference(lm):
    rows = perplexity_rows(lm, HUMAN_TEXT["prompt"], [0, 1.5], reference=HUMAN_TEXT["text"], n=2, max_new_tokens=16)
    greedy, hot, reference = (row["perplexity"] for row in rows)
    assert rows[0]["tokens"] <= 16 and rows[1]["tokens"] <= 32
    assert greedy < hot and greedy < reference


def test_tail_rows_count_what_lies_below_each_threshold(lm):
    dist = next_token_distribution(lm, PROMPT)
    rows = tail_rows(dist, [1e-2, 1e-6])
    probs = dist.probs.double()
    assert rows[1]["tokens"] == int(((probs > 0) & (probs < 1e-6)).sum())
    assert rows[0]["their mass"] >= rows[1]["their mass"] > 0
    with pytest.raises(ValueError, match="threshold"):
        tail_rows(dist, [0.0])


def test_tail_chance_combines_the_steps(lm):
    sample = generate(lm, PROMPT, SamplingParams(max_new_tokens=8, seed=0))
    low, high = (tail_chance(lm, PROMPT, sample.token_ids, t) for t in (1e-6, 1e-2))
    assert low["steps"] == len(sample.token_ids)
    assert 0 <= low["chance of at least one"] <= high["chance of at least one"] <= 1
    assert high["chance of at least one"] >= high["mean mass below"]


def test_server_logprobs_map_onto_the_kits_numbers(lm):
    """raw = the model's own distribution (stage "raw"); processed = what was sampled from (Step.prob)."""
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=6, seed=1)
    result = generate(lm, PROMPT, params)
    raw = server_logprobs(lm, result, top_logprobs=3)["content"]
    processed = server_logprobs(lm, result, top_logprobs=3, mode="processed")["content"]
    first = next_token_distribution(lm, PROMPT, params)
    assert math.exp(raw[0]["logprob"]) == pytest.approx(first.prob_of(result.token_ids[0], "raw"), rel=1e-4)
    for entry, step in zip(processed, result.steps, strict=True):
        assert math.exp(entry["logprob"]) == pytest.approx(step.prob, rel=1e-4)
        assert entry["token"] == step.token
    assert [t["token"] for t in raw[0]["top_logprobs"]] == [t.token for t in first.top(3, "raw")]
    rows = logprob_rows(lm, result, n=2)
    assert len(rows) == 2 and rows[0]["Step.prob"] == pytest.approx(math.exp(rows[0]["processed logprob"]), rel=1e-4)
    with pytest.raises(ValueError, match="mode"):
        server_logprobs(lm, result, mode="logits")
    with pytest.raises(ValueError, match="top_logprobs"):
        server_logprobs(lm, result, top_logprobs=21)


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_scores_are_transformers_own(lm, length_penalty):
    """transformers' sequences_scores = the summed log-probabilities over length ** length_penalty."""
    result = beam_search(lm, PROMPT, num_beams=3, max_new_tokens=8, length_penalty=length_penalty)
    assert len(result.beams) == 3
    for beam in result.beams:
        assert beam.score == pytest.approx(beam.logprob / len(beam) ** length_penalty, abs=1e-3)
    assert [b.score for b in result.beams] == sorted((b.score for b in result.beams), reverse=True)


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(lm):
    prompt = "Write a short story about a dragon."
    greedy = beam_search(lm, prompt, num_beams=1, max_new_tokens=10, length_penalty=0.0).best
    beams = beam_search(lm, prompt, num_beams=4, max_new_tokens=10, length_penalty=0.0)
    plain = generate(lm, prompt, SamplingParams(temperature=0, max_new_tokens=10))
    assert greedy.token_ids == plain.token_ids
    assert beams.best.logprob >= greedy.logprob - 1e-4


def test_no_repeat_ngram_size_blocks_repeated_runs(lm):
    from smolkit.textstats import _ngrams

    result = beam_search(lm, "Write a poem about the sea.", num_beams=1, max_new_tokens=48, no_repeat_ngram_size=3)
    grams = _ngrams(result.best.token_ids, 3)
    assert len(grams) == len(set(grams))


def test_beam_tree_merges_shared_beginnings(lm):
    result = beam_search(lm, PROMPT, num_beams=3, max_new_tokens=6)
    nodes = beam_tree(lm, result)
    roots = [n for n in nodes if n.parent == -1]
    assert sum(len(b) for b in result.beams) >= len(nodes) >= max(len(b) for b in result.beams)
    assert sorted({rank for n in roots for rank in n.beams}) == [0, 1, 2]
    last = [n for n in nodes if 0 in n.beams][-1]
    assert last.logprob == pytest.approx(result.beams[0].logprob, abs=1e-4)


def test_bad_search_settings_name_the_input(lm):
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(lm, PROMPT, num_beams=0)
    with pytest.raises(ValueError, match="num_return_sequences"):
        beam_search(lm, PROMPT, num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="early_stopping"):
        beam_search(lm, PROMPT, early_stopping="sometimes")
    with pytest.raises(ValueError, match="repetition_penalty"):
        beam_search(lm, PROMPT, repetition_penalty=0)


def test_beam_snippets_compile_and_name_the_search():
    for target in ("transformers", "vllm"):
        code = beam_snippet(3, target, length_penalty=0.5)
        compile(code, "<snippet>", "exec")
        assert ("num_beams=3" if target == "transformers" else "beam_width=3") in code
        assert ("smolkit.embedded_folder()" in code) and ("prompt + generated" in code) == (target == "vllm")
    with pytest.raises(ValueError, match="target"):
        beam_snippet(3, "openai")


@pytest.fixture
def no_model_work(lm):
    """Any forward pass of the model raises: what runs inside must be refused before the model works."""

    def refuse(*args, **kwargs):
        raise RuntimeError("the model ran")

    handle = lm.model.register_forward_pre_hook(refuse)
    yield
    handle.remove()


def test_scoring_and_searching_beyond_the_memory_are_refused_first(lm, monkeypatch, no_model_work):
    """A 1,500-token continuation (about 1.5 GiB to score) and 16 beams of 10**6 tokens under a 1 GiB allowance:
    a ValueError naming what would need the memory, before any forward pass (the 8,000-token case was killed at
    7.5 GB; the search ran 300 s)."""
    monkeypatch.setattr(generation, "available_bytes", lambda device: 2**30)
    long = "word " * 1500
    with pytest.raises(ValueError, match=r"scoring 150\d tokens of continuation would need about 1\.\d GiB .* 1\.0"):
        score_continuation(lm, PROMPT, long)
    ids = lm.tokenizer(long, add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match=r"scoring 150\d tokens of token_ids would need"):
        tail_chance(lm, PROMPT, ids)
    capped = pytest.warns(UserWarning, match=r"max_new_tokens=1000000 does not fit .* generating at most 81\d\d")
    with capped, pytest.raises(ValueError, match=r"num_beams=16 x max_new_tokens=81\d\d would need about"):
        beam_search(lm, PROMPT, num_beams=16, max_new_tokens=10**6, early_stopping="never")


def test_length_penalty_is_finite_and_in_range_before_the_search(lm, no_model_work):
    lo, hi = LENGTH_PENALTY_RANGE
    for value in (1e308, float("nan"), float("inf"), hi + 1, lo - 1):
        with pytest.raises(ValueError, match="length_penalty must be"):
            beam_search(lm, PROMPT, num_beams=2, length_penalty=value)
        with pytest.raises(ValueError, match="length_penalty must be"):
            beam_snippet(2, length_penalty=value)
    with pytest.raises(TypeError, match="length_penalty must be a number"):
        beam_search(lm, PROMPT, length_penalty="1")


def test_errors_name_the_argument_before_model_work(lm, no_model_work):
    """The argument is named as the caller wrote it, and refused before any forward pass."""
    with pytest.raises(ValueError, match=r"^continuation must be in \[0, \d+\]"):
        score_continuation(lm, "Hi", [-1])
    with pytest.raises(TypeError, match=r"^token_ids must be a list of token ids"):
        tail_chance(lm, "Hi", 5)
    with pytest.raises(ValueError, match=r"^reference is empty"):
        perplexity_rows(lm, PROMPT, [0.0, 1.0], reference="")
    with pytest.raises(ValueError, match=r"^temperature must be"):
        perplexity_rows(lm, PROMPT, [0.0, -1.0])


def test_server_logprobs_checks_digits_first(lm):
    result = generate(lm, PROMPT, SamplingParams(max_new_tokens=2, seed=0))
    handle = lm.model.register_forward_pre_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("the model ran")))
    try:
        with pytest.raises(ValueError, match=r"^digits must be an integer >= 0, got -1"):
            server_logprobs(lm, result, digits=-1)
    finally:
        handle.remove()
