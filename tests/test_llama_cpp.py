"""The engine lens checked against a real llama.cpp (llama-cpp-python, built by ``make test-engines``).

Run by ``make test-engines`` only (marker ``engines``): llama-cpp-python is not in a learner's venv.

- The build runs here: portable (AVX2, no AVX-512/AMX: the native build crashed on this Xeon), loads the GGUF.
- Chi-square: for three presets the kit's llama-cpp-python-order distribution, applied to llama.cpp's **own** raw
  logits, is what llama.cpp draws from: 10,000 draws each, the 20 likeliest tokens and one bin for the rest (20
  degrees of freedom; fewer when fewer tokens survive), rejected at p = 0.001 (critical value 45.3 for 20); and no
  draw lands on a token the kit rules out. The same draws are held against transformers' order too, to show the
  test can tell the difference.
- The OpenAI-compatible server, started on 127.0.0.1 and stopped by the test: the kit's ``to_openai`` export is
  accepted and samples, and the logprobs it returns are the raw ones the kit predicts.
"""

from __future__ import annotations

import math

import pytest
import torch

import smolkit
from smolkit import llamacpp
from smolkit.engines import in_engine, received_params, total_variation
from smolkit.testing import chi_square

pytestmark = pytest.mark.engines

PROMPT = "Write one word that describes the sea."
DRAWS = 10_000
BINS = 20
CRITICAL = {5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88, 10: 29.59, 11: 31.26, 12: 32.91, 13: 34.53,
            14: 36.12, 15: 37.70, 16: 39.25, 17: 40.79, 18: 42.31, 19: 43.82, 20: 45.32}  # fmt: skip
"""The chi-square distribution's critical values at p = 0.001, by degrees of freedom."""
PRESETS = {
    "temperature, top_k, top_p and min_p": (
        smolkit.SamplingParams(temperature=1.5, top_k=30, top_p=0.9, min_p=0.02), ""),
    "temperature alone": (smolkit.SamplingParams(temperature=0.8), ""),
    "penalties on generated tokens": (
        smolkit.SamplingParams(top_k=60, repetition_penalty=1.5, presence_penalty=0.8, frequency_penalty=0.4),
        "Waves, waves and waves"),
}  # fmt: skip


@pytest.fixture(scope="module")
def llm():
    return llamacpp.load_llama()


def test_the_portable_build_runs_here(llm):
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in info and "AVX512 = 1" not in info and "AMX_INT8 = 1" not in info, info
    logits = llamacpp.llama_distribution(smolkit.load_model(), PROMPT, smolkit.SamplingParams(), llm=llm).logits
    assert logits.shape == (49152,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list(PRESETS))
def test_llama_cpp_draws_from_the_kits_llama_cpp_distribution(lm, llm, name):
    params, generated = PRESETS[name]
    dist = llamacpp.llama_distribution(lm, PROMPT, params, generated, llm=llm)
    expected = in_engine(dist, "llama-cpp-python").probs
    counts = llamacpp.llama_draws(dist, DRAWS, seed=1, llm=llm)
    assert counts.sum() == DRAWS
    assert counts[expected == 0].sum() == 0, "llama.cpp drew a token the kit says it cannot"
    bins = min(BINS, int((expected > 0).sum()) - 1)
    assert bins >= 5
    assert chi_square(counts, expected, bins=bins) < CRITICAL[bins]
    other = in_engine(dist, "transformers").probs
    if total_variation(other, expected) > 0.05:  # transformers' order: a distribution the draws must reject
        outside = counts[other == 0].sum() > 0
        assert outside or chi_square(counts, other, bins=bins) > CRITICAL[bins]


def test_the_kits_openai_export_samples_on_llama_cpp_pythons_server(lm, tmp_path):
    """The export is accepted and samples; the logprobs the server returns are raw (the log-softmax of llama.cpp's
    logits, before penalties, temperature and cut-offs), so they match the kit's "raw" stage of llama.cpp's logits
    to float precision, not its processed distribution; and they stand within quantisation noise of the kit's raw
    logprobs from transformers (float32 de-quantised weights vs Q4_1 arithmetic)."""
    params = smolkit.SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=24, seed=3)
    messages = [{"role": "user", "content": PROMPT}]
    body = {**smolkit.to_openai(params, messages=messages, http=True), "logprobs": True, "top_logprobs": 5}
    with llamacpp.LlamaServer(log=tmp_path / "server.log") as server:
        answer = server.chat(body)
    choice = answer["choices"][0]
    assert choice["message"]["content"].strip()
    first = choice["logprobs"]["content"][0]
    served = {t["token"]: t["logprob"] for t in first["top_logprobs"]}
    got = received_params(body, "llama-cpp-python", base=params)
    llama = llamacpp.llama_distribution(lm, PROMPT, got)
    kit = smolkit.next_token_distribution(lm, PROMPT, got)
    predicted = {t.token: math.log(t.prob) for t in llama.top(5, stage="raw")}
    assert served.keys() == predicted.keys()
    assert max(abs(served[t] - predicted[t]) for t in served) < 1e-3
    processed = in_engine(llama, "llama-cpp-python")
    top = llama.top(1, stage="raw")[0]
    assert abs(math.log(processed.prob_of(top.id)) - served[top.token]) > 0.05  # not the processed logprob
    hf = {t.token: math.log(t.prob) for t in kit.top(5, stage="raw")}
    assert max(abs(served[t] - hf[t]) for t in served if t in hf) < 0.5
    assert first["token"] in {t.token for t in processed.top(100)}  # drawn from what the kit says can be drawn
