"""What top_k / top_p keep: survivors and the model's probability mass they carry, on the real embedded model."""

from __future__ import annotations

import pytest
import torch
from conftest import PROMPT

from smolkit import SamplingParams, next_token_distribution
from smolkit.cutoffs import cutoff_rows, kept_mass, mass_of_survivors


@pytest.fixture(scope="module")
def dist(lm):
    return next_token_distribution(lm, PROMPT, SamplingParams())


def test_mass_of_survivors_sums_only_the_kept_tokens():
    base = torch.tensor([0.4, 0.3, 0.2, 0.1])
    assert mass_of_survivors(base, torch.tensor([0.0, 1.0, 0.0, 0.0])) == pytest.approx(0.3)
    assert mass_of_survivors(base, base) == pytest.approx(1.0)


def test_no_cutoff_keeps_all_the_mass(dist):
    assert kept_mass(dist) == pytest.approx(1.0, abs=1e-5)


def test_top_k_keeps_the_mass_of_the_k_most_likely(dist):
    d = dist.with_params(top_k=5)
    expected = float(torch.topk(dist.stages["raw"], 5).values.sum())
    assert kept_mass(d) == pytest.approx(expected, rel=1e-5)
    assert kept_mass(d, stage="top_k") == pytest.approx(expected, rel=1e-5)


def test_top_p_keeps_at_least_top_p_of_the_mass(dist):
    for top_p in (0.3, 0.6, 0.9):
        assert kept_mass(dist.with_params(top_p=top_p)) >= top_p - 1e-6


def test_unknown_stage(dist):
    with pytest.raises(ValueError, match="stage must be one of"):
        kept_mass(dist, stage="top_k")


def test_rows_grow_with_the_cutoff(dist):
    rows = cutoff_rows(dist, "top_k", [1, 5, 20, -1])
    assert [r["top_k"] for r in rows] == [1, 5, 20, -1]
    assert [r["surviving"] for r in rows] == [1, 5, 20, dist.lm.vocab_size]
    masses = [r["kept_mass"] for r in rows]
    assert masses == sorted(masses)
    assert rows[0]["p_top"] == pytest.approx(1.0)
    assert rows[0]["entropy"] == pytest.approx(0.0, abs=1e-6)
