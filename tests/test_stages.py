"""stages: per-stage tables, penalty arithmetic, stages in vLLM's order and parameter grids, on the real model."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import PROMPT

from smolkit import SamplingParams, next_token_distribution
from smolkit.distribution import Distribution
from smolkit.export import VLLM_STAGE_ORDER, in_vllm_order
from smolkit.stages import grid_table, in_order, order_of, penalty_rows, stage_rows

REPETITIVE = "Paris is the capital. Paris is the capital. Paris is"


def test_order_of_follows_the_given_order():
    names = ["raw", "repetition_penalty", "temperature", "top_k", "top_p", "min_p", "final"]
    assert order_of(names) == ["repetition_penalty", "temperature", "min_p", "top_k", "top_p"]
    assert order_of(names, order=names[1:-1]) == names[1:-1]
    assert order_of(["raw", "odd_stage", "top_p"], order=VLLM_STAGE_ORDER) == ["odd_stage", "top_p"]


def test_in_order_with_transformers_order_reproduces_the_stages(lm):
    params = SamplingParams(temperature=0.8, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.2)
    dist = next_token_distribution(lm, PROMPT, params, generated=" Paris")
    same = in_order(dist, order=[s for s in dist.stages if s not in ("raw", "final")])
    assert list(same.stages) == list(dist.stages)
    for name in dist.stages:
        assert torch.equal(same.stages[name], dist.stages[name]), name


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.3, top_p=0.8, min_p=0.1),
        SamplingParams(temperature=0.7, top_k=20, min_p=0.2, presence_penalty=1.0, repetition_penalty=1.1),
        SamplingParams(temperature=0, repetition_penalty=1.3),
    ],
    ids=repr,
)
def test_in_order_vllm_final_matches_export(lm, params):
    dist = next_token_distribution(lm, PROMPT, params, generated=REPETITIVE)
    vllm = in_order(dist)
    assert torch.allclose(vllm.probs, in_vllm_order(dist), atol=1e-6)
    assert [s for s in vllm.stages if s not in ("raw", "greedy", "final")] == order_of(list(dist.stages))
    if not params.greedy:
        # min_p before top_p can only remove more: top_p then takes its share of a smaller total
        assert set(torch.nonzero(vllm.probs).flatten().tolist()) <= set(torch.nonzero(dist.probs).flatten().tolist())


def test_min_p_before_top_p_keeps_fewer_tokens(lm):
    """Probabilities 0.5, 0.3, 0.1, 0.1: top_p=0.6 keeps two tokens, min_p=0.25 then nothing more (transformers);
    min_p first leaves 0.625/0.375, and top_p=0.6 then keeps only the first (vLLM)."""
    logits = torch.full((lm.vocab_size,), -1e4)
    logits[:4] = torch.tensor([0.5, 0.3, 0.1, 0.1]).log()
    params = SamplingParams(top_p=0.6, min_p=0.25)
    dist = Distribution.from_logits(lm, params, logits, lm.encode(PROMPT), lm.encode(PROMPT).shape[1])
    assert dist.surviving() == 2
    assert in_order(dist).surviving() == 1


def test_stage_rows_describe_each_stage(lm):
    dist = next_token_distribution(lm, PROMPT, SamplingParams(temperature=0.5, top_p=0.9, repetition_penalty=1.3))
    rows = stage_rows(dist)
    assert [r["stage"] for r in rows] == [s for s in dist.stages if s != "final"]
    for row in rows:
        assert math.isclose(row["entropy"], dist.stage_entropy(row["stage"]))
        assert row["surviving"] == dist.surviving(row["stage"])
        assert row["p_top"] == pytest.approx(float(dist.stages[row["stage"]].max()))


def test_penalty_rows_follow_the_formulas(lm):
    dist = next_token_distribution(lm, PROMPT, SamplingParams(), generated=REPETITIVE)
    rows = penalty_rows(dist, n=8, repetition_penalty=1.5, presence_penalty=0.7, frequency_penalty=0.4)
    prompt = dist.input_ids[0, : dist.prompt_length].tolist()
    generated = dist.input_ids[0, dist.prompt_length :].tolist()
    ids = [t.id for t in dist.top(8, "raw")]
    assert len(rows) == 8
    assert any(r["generated"] > 1 for r in rows)  # the test needs a repeated token among the top 8
    for token_id, row in zip(ids, rows, strict=True):
        logit, count = row["logit"], generated.count(token_id)
        assert row["generated"] == count
        assert row["in prompt"] == (token_id in prompt)
        seen = token_id in prompt or count > 0
        expected_rep = (logit / 1.5 if logit > 0 else logit * 1.5) if seen else logit
        assert row["repetition 1.5"] == pytest.approx(expected_rep, rel=1e-5)
        assert row["presence 0.7"] == pytest.approx(logit - 0.7 * (count > 0), rel=1e-5)
        assert row["frequency 0.4"] == pytest.approx(logit - 0.4 * count, rel=1e-5)


def test_grid_table_holds_the_heatmap_numbers(lm):
    dist = next_token_distribution(lm, PROMPT, SamplingParams())
    temps, top_ps = [0.5, 1.0, 1.5], [0.5, 0.9, 1.0]
    lines = grid_table(dist, temps, top_ps, metric="surviving").splitlines()
    assert lines[0].split()[-3:] == ["0.5", "1", "1.5"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "0.9", "0.5"]  # largest top_p first
    for line, p in zip(lines[1:], [1.0, 0.9, 0.5], strict=True):
        got = [int(v) for v in line.split()[1:]]
        assert got == [dist.with_params(temperature=t, top_p=p).surviving() for t in temps]
    assert lines[1].split()[1:] == [str(lm.vocab_size)] * 3
    entropy = grid_table(dist, [1.0], [0.9]).splitlines()[1].split()[1]
    assert entropy == f"{dist.with_params(top_p=0.9).entropy:.2f}"
    with pytest.raises(ValueError, match="metric"):
        grid_table(dist, temps, top_ps, metric="mass")


def test_penalty_rows_show_only_the_penalties_asked_for(lm):
    dist = next_token_distribution(lm, PROMPT, SamplingParams(), generated=REPETITIVE)
    assert list(penalty_rows(dist, n=2, repetition_penalty=1.2)[0]) == [
        "token",
        "in prompt",
        "generated",
        "logit",
        "repetition 1.2",
    ]
    assert list(penalty_rows(dist, n=2)[0])[4:] == ["repetition 1.3", "presence 1", "frequency 0.5"]
    ids = [dist.top(5, "raw")[4].id]
    assert [r["token"] for r in penalty_rows(dist, token_ids=ids)] == [lm.token_text(ids[0])]
