"""tables: parameter sweeps, per-stage rows, penalty arithmetic, grids and their text, on the real embedded model."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import PROMPT

from smolkit import SamplingParams, next_token_distribution
from smolkit.tables import format_rows, grid_table, layout, penalty_rows, stage_rows, sweep

REPETITIVE = "Paris is the capital. Paris is the capital. Paris is"


@pytest.fixture(scope="module")
def dist(lm):
    return next_token_distribution(lm, PROMPT, SamplingParams())


def test_no_cutoff_keeps_all_the_mass(dist):
    assert dist.kept_mass() == pytest.approx(1.0, abs=1e-5)


def test_top_k_keeps_the_mass_of_the_k_most_likely(dist):
    d = dist.with_params(top_k=5)
    expected = float(torch.topk(dist.stages["raw"], 5).values.sum())
    assert d.kept_mass() == pytest.approx(expected, rel=1e-5)
    assert d.kept_mass(stage="top_k") == pytest.approx(expected, rel=1e-5)


def test_top_p_keeps_at_least_top_p_of_the_mass(dist):
    for top_p in (0.3, 0.6, 0.9):
        assert dist.with_params(top_p=top_p).kept_mass() >= top_p - 1e-6


def test_kept_mass_of_an_unknown_stage(dist):
    with pytest.raises(ValueError, match="stage must be one of"):
        dist.kept_mass(stage="top_k")


def test_sweep_rows_grow_with_the_cutoff(dist):
    rows = sweep(dist, "top_k", [1, 5, 20, 0], columns=("surviving", "kept_mass", "entropy", "p_top"))
    assert [r["top_k"] for r in rows] == [1, 5, 20, 0]
    assert [r["surviving"] for r in rows] == [1, 5, 20, dist.lm.vocab_size]
    masses = [r["kept_mass"] for r in rows]
    assert masses == sorted(masses)
    assert rows[0]["p_top"] == pytest.approx(1.0)
    assert rows[0]["entropy"] == pytest.approx(0.0, abs=1e-6)


def test_sweep_of_temperature_matches_with_params(dist):
    rows = sweep(dist, "temperature", [0.5, 1.5])
    assert list(rows[0]) == ["temperature", "entropy", "surviving", "top", "p_top"]
    for row in rows:
        d = dist.with_params(temperature=row["temperature"])
        assert row["entropy"] == pytest.approx(d.entropy) and row["top"] == d.top(1)[0].token
    with pytest.raises(ValueError, match="columns must be a list of names among"):
        sweep(dist, "temperature", [1.0], columns=("entropy", "mass"))


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
    with pytest.raises(ValueError, match=r"token_ids must be in \[0, 49151\]"):
        penalty_rows(dist, token_ids=[49152])


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


def test_format_rows_and_layout_align_columns():
    text = format_rows([{"top_p": 0.9, "surviving": 12, "top": " a"}, {"top_p": 1.0, "surviving": 3, "top": "bb"}])
    assert text.splitlines() == ["top_p  surviving  top", "0.9    12         ' a'", "1      3          'bb'"]
    assert layout([["x", "10"], ["yy", "2"]], right=True).splitlines() == [" x  10", "yy   2"]
    assert format_rows([]) == ""
