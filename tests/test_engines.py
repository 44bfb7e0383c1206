"""The engine lens against hand-worked examples: each engine's order, its penalty history, its defaults.

The logits are made by hand (a few tokens with chosen probabilities, the rest of the vocabulary at -100), so every
expected number below is worked out on paper in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch

import smolkit
from smolkit.distribution import Distribution
from smolkit.engines import ENGINES, in_engine, logprob_flags, logprob_lens, received_params, total_variation

A, B, C, D = 100, 200, 300, 400  # four token ids of the embedded vocabulary


def hand_made(lm, probs, params, ids=(B,), prompt_length=1) -> Distribution:
    """A Distribution whose raw probabilities are ``probs`` on tokens A, B, C, D (all others ~e-100)."""
    logits = torch.full((lm.vocab_size,), -100.0)
    for token, p in zip((A, B, C, D), probs, strict=False):
        logits[token] = math.log(p)
    return Distribution.from_logits(lm, params, logits, torch.tensor([list(ids)]), prompt_length)


def kept(dist: Distribution) -> list[int]:
    return sorted(int(i) for i in torch.nonzero(dist.probs > 1e-6).flatten())


def test_llama_cpp_cuts_before_temperature(lm):
    # probs 0.5, 0.3, 0.15, 0.05; temperature 2, top_p 0.75.
    # llama.cpp: top_p at temperature 1 keeps 0.5 + 0.3 = 0.8 >= 0.75 (2 tokens), then temperature 2 gives
    #   sqrt(0.5) : sqrt(0.3) = 0.5635 : 0.4365.
    # transformers: temperature 2 first: sqrt -> 0.379, 0.294, 0.208, 0.120; 0.379 + 0.294 = 0.673 < 0.75, so top_p
    #   keeps 3 tokens.
    params = smolkit.SamplingParams(temperature=2.0, top_p=0.75)
    dist = hand_made(lm, [0.5, 0.3, 0.15, 0.05], params)
    for name in ("llama.cpp", "llama-cpp-python"):
        ours = in_engine(dist, name)
        assert list(ours.stages) == ["raw", "top_p", "temperature", "final"]
        assert kept(ours) == [A, B]
        assert ours.prob_of(A) == pytest.approx(math.sqrt(0.5) / (math.sqrt(0.5) + math.sqrt(0.3)), abs=1e-5)
    assert kept(in_engine(dist, "transformers")) == [A, B, C]
    assert kept(in_engine(dist, "vllm")) == [A, B, C]


def test_sglang_applies_top_k_and_top_p_jointly_unless_min_p(lm):
    # probs 0.4, 0.3, 0.2, 0.1; top_k 2, top_p 0.5.
    # SGLang (joint): top_p on the whole distribution keeps 0.4 + 0.3 (0.4 < 0.5), top_k keeps the same two:
    #   0.4 : 0.3 = 4/7 : 3/7. In turn (transformers, vLLM): top_k renormalises to 4/7, 3/7, and 4/7 >= 0.5 alone.
    params = smolkit.SamplingParams(top_k=2, top_p=0.5)
    dist = hand_made(lm, [0.4, 0.3, 0.2, 0.1], params)
    sglang = in_engine(dist, "sglang")
    assert list(sglang.stages) == ["raw", "top_k+top_p", "final"]
    assert sglang.prob_of(A) == pytest.approx(4 / 7, abs=1e-5)
    assert kept(in_engine(dist, "transformers")) == [A]
    assert kept(in_engine(dist, "vllm")) == [A]
    # with min_p set SGLang renormalises after each cut (top_k, top_p, then min_p), as transformers does
    with_min_p = in_engine(dist.with_params(min_p=0.01), "sglang")
    assert list(with_min_p.stages) == ["raw", "top_k", "top_p", "min_p", "final"]
    assert kept(with_min_p) == [A]


def test_vllm_applies_min_p_before_top_p(lm):
    # probs 0.5, 0.3, 0.15, 0.05; top_p 0.7, min_p 0.35.
    # vLLM: min_p first: 0.35 * 0.5 = 0.175 keeps 0.5, 0.3 (renormalised 0.625, 0.375); top_p 0.7: 0.625 < 0.7, so
    #   both stay. transformers: top_p first keeps 0.5, 0.3; then min_p keeps both too: same tokens.
    # With min_p 0.65: vLLM keeps 0.5 only (0.3 < 0.325); transformers keeps 0.5 only as well.
    params = smolkit.SamplingParams(top_p=0.7, min_p=0.35)
    dist = hand_made(lm, [0.5, 0.3, 0.15, 0.05], params)
    assert list(in_engine(dist, "vllm").stages) == ["raw", "min_p", "top_p", "final"]
    assert kept(in_engine(dist, "vllm")) == [A, B]


def test_penalty_history_differs_by_engine(lm):
    # prompt = [B], generated = [A]; repetition_penalty 2 on log-probs log(0.25) each (all four equal).
    # transformers, vLLM and llama-server count the prompt: A and B are penalised (logit * 2, as they are < 0).
    # llama-cpp-python and SGLang count generated tokens only: A alone.
    params = smolkit.SamplingParams(repetition_penalty=2.0)
    dist = hand_made(lm, [0.25] * 4, params, ids=(B, A), prompt_length=1)
    penalised = {}
    for name in ENGINES:
        probs = in_engine(dist, name).probs
        penalised[name] = sorted(t for t in (A, B, C, D) if probs[t] < probs[C] - 1e-6)
    assert penalised == {
        "transformers": [A, B], "vllm": [A, B], "llama.cpp": [A, B], "sglang": [A], "llama-cpp-python": [A],
    }  # fmt: skip


def test_llama_cpp_penalises_only_the_last_64_tokens(lm):
    # generated = [A] + 64 x C: A is 65 tokens back, outside llama.cpp's penalty_last_n = 64; vLLM still counts it.
    params = smolkit.SamplingParams(presence_penalty=1.0)
    dist = hand_made(lm, [0.25] * 4, params, ids=(B, A, *[C] * 64), prompt_length=1)
    llama = in_engine(dist, "llama-cpp-python").probs.tolist()
    vllm = in_engine(dist, "vllm").probs.tolist()
    assert llama[A] == pytest.approx(llama[D], rel=1e-5)  # A not penalised
    assert vllm[A] == pytest.approx(vllm[D] * math.exp(-1), rel=1e-4)  # logit - 1
    assert llama[C] == pytest.approx(llama[D] * math.exp(-1), rel=1e-4)


def test_llama_cpp_python_server_reads_its_own_names(lm):
    # to_openai sends vLLM's names: repetition_penalty and max_completion_tokens reach llama-cpp-python's server
    # as its defaults (repeat_penalty 1.1, no limit); temperature, top_p and min_p arrive. top_k off is left out of
    # the export (vLLM 0.8.5 and older refuse 0), so that server applies its own default, 40, and a set one arrives.
    params = smolkit.SamplingParams(temperature=0.6, top_p=0.9, top_k=0, min_p=0.0, max_new_tokens=32)
    body = smolkit.to_openai(params, http=True)
    got = received_params(body, "llama-cpp-python")
    assert (got.temperature, got.top_p, got.top_k, got.min_p) == (0.6, 0.9, 40, 0.0)
    assert received_params(smolkit.to_openai(params.replace(top_k=5), http=True), "llama-cpp-python").top_k == 5
    assert got.repetition_penalty == 1.1
    assert received_params(body, "vllm").repetition_penalty == 1.0


def test_explain_names_each_values_source(lm):
    params = smolkit.SamplingParams(temperature=0.7, top_p=0.9)
    shown = smolkit.explain(params, lm, engine="llama.cpp")
    sources = {field: source for field, _, source in shown.settings}
    values = {field: value for field, value, _ in shown.settings}
    assert sources["temperature"] == sources["top_p"] == "you"
    assert (values["top_k"], values["min_p"], sources["top_k"]) == (40, 0.05, "engine default")
    assert shown.gguf_keys == {}  # the embedded GGUF carries no general.sampling.* keys
    assert shown.stages == ("top_k", "top_p", "min_p", "temperature")
    assert "general.sampling.* keys: none" in str(shown)
    vllm = smolkit.explain(params, lm, engine="vllm")
    assert dict((f, v) for f, v, _ in vllm.settings)["max_new_tokens"] == 16
    with pytest.raises(ValueError, match="engine must be one of"):
        smolkit.explain(params, lm, engine="tgi")


def test_logprob_lens_three_ways(lm):
    # probs 0.5, 0.3, 0.15, 0.05 at temperature 2 with top_k 2 (vLLM): raw log 0.5; after temperature
    # log(sqrt(0.5) / sum(sqrt)); processed: top 2 renormalised, -inf beyond.
    params = smolkit.SamplingParams(temperature=2.0, top_k=2)
    dist = hand_made(lm, [0.5, 0.3, 0.15, 0.05], params)
    rows = logprob_lens(dist, "vllm", n=3)
    roots = [math.sqrt(p) for p in (0.5, 0.3, 0.15, 0.05)]
    assert rows[0]["raw"] == pytest.approx(math.log(0.5), abs=1e-5)
    assert rows[0]["after temperature"] == pytest.approx(math.log(roots[0] / sum(roots)), abs=1e-5)
    assert rows[0]["processed (vllm)"] == pytest.approx(math.log(roots[0] / (roots[0] + roots[1])), abs=1e-5)
    assert rows[2]["processed (vllm)"] == -math.inf
    assert {r["engine"] for r in logprob_flags()} == set(ENGINES)


def test_engines_agree_when_nothing_cuts(lm):
    # temperature alone, no cut-off, no penalty: every engine samples from the same distribution.
    dist = smolkit.next_token_distribution(lm, "Name a colour.", smolkit.SamplingParams(temperature=0.7))
    for name in ENGINES:
        assert total_variation(in_engine(dist, name).probs, dist.probs) < 1e-6


def test_the_explorer_switches_engines(lm):
    params = smolkit.SamplingParams(temperature=1.5, top_p=0.9)
    explorer = smolkit.DistributionExplorer(lm, "Write a poem about the sea.", params)
    base = explorer.dist
    explorer.engine_menu.value = "llama.cpp"  # what picking it in the menu does
    assert explorer.engine == "llama.cpp"
    assert torch.equal(explorer.dist.probs, in_engine(base, "llama.cpp").probs)
    assert explorer.dist.surviving() < base.surviving()  # top_p at temperature 1 keeps fewer tokens
    explorer.update(top_k=5)
    assert list(explorer.dist.stages) == ["raw", "top_k", "top_p", "temperature", "final"]
    assert "llama.cpp" in explorer.readout.value
    with pytest.raises(ValueError, match="engine must be one of"):
        explorer.set_engine("tgi")
