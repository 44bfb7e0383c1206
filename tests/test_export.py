"""smolkit.export: presets to transformers / vLLM / OpenAI and back, and explain (what generate really runs).

Parity with transformers: the exported GenerationConfig + processors, run through the model's own ``generate``,
give the probabilities ``next_token_distribution`` shows (within 1e-5 absolute; both are float32 softmaxes of the
same logits, the differences seen are ~1e-7) and the same greedy tokens.
"""

from __future__ import annotations

import ast
import contextlib
import json
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GenerationConfig, LogitsProcessorList, TopKLogitsWarper

import smolkit
from smolkit import SamplingParams
from smolkit.beams import beam_snippet
from smolkit.distribution import Distribution, next_token_distribution, prepare_inputs
from smolkit.embedded import embedded_folder, embedded_gguf_path
from smolkit.explain import explain
from smolkit.export import ExportWarning, to_openai, to_vllm
from smolkit.hf import processors_for, stage_name, to_transformers
from smolkit.importers import equivalent, from_generation_config, from_model_defaults, from_openai
from smolkit.snippets import SNIPPET_TARGETS, snippet

PROB_ATOL = 1e-5

# vLLM 0.24's SamplingParams fields (vllm/sampling_params.py) that a preset can set, and the fields of its
# OpenAI-compatible ChatCompletionRequest (vllm/entrypoints/openai/chat_completion/protocol.py).
VLLM_SAMPLING_FIELDS = {
    "n",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "max_tokens",
    "min_tokens",
}
OPENAI_CHAT_FIELDS = {  # https://platform.openai.com/docs/api-reference/chat/create
    "model",
    "messages",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "max_completion_tokens",
    "n",
    "presence_penalty",
    "response_format",
    "seed",
    "stop",
    "stream",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "user",
}
VLLM_CHAT_EXTRA_FIELDS = {
    "top_k",
    "min_p",
    "repetition_penalty",
    "stop_token_ids",
    "min_tokens",
    "ignore_eos",
    "use_beam_search",
    "length_penalty",
    "include_stop_str_in_output",
    "skip_special_tokens",
}

PROMPTS = ["What is the capital of France?", "Write a haiku about tea.", "Name three fruits."]
PRESETS = [
    SamplingParams(temperature=0.7, top_p=0.9),
    SamplingParams(temperature=1.3, top_k=20, min_p=0.05),
    SamplingParams(temperature=0.8, repetition_penalty=1.3, presence_penalty=0.8, frequency_penalty=0.5),
    SamplingParams(temperature=0.6, top_p=0.8, min_p=0.1, min_tokens=2, stop_token_ids=[198]),
]


@contextlib.contextmanager
def model_generation_config(lm, gc):
    saved = lm.model.generation_config
    lm.model.generation_config = gc
    try:
        yield
    finally:
        lm.model.generation_config = saved


def exported(lm, params, prompt, base=None):
    """Inputs, GenerationConfig and processors for plain ``model.generate``, exported the documented way."""
    inputs = lm.inputs(prompt)
    gc, procs = to_transformers(
        params,
        eos_token_id=lm.eos_token_ids,
        pad_token_id=lm.pad_token_id,
        base=base if base is not None else lm.model.generation_config,
    )
    return inputs, gc, procs


@torch.inference_mode()
def plain_generate(lm, inputs, gc, procs, **updates):
    gc.update(**updates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lm.model.generate(**inputs, generation_config=gc, logits_processor=procs)


# -- vLLM ------------------------------------------------------------------------------------------------------


def test_vllm_fields_and_values():
    params = SamplingParams(
        max_new_tokens=12,
        temperature=0.5,
        top_p=0.8,
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.2,
        presence_penalty=0.4,
        frequency_penalty=-0.3,
        seed=7,
        min_tokens=3,
        stop_token_ids=[13, 198],
        n=2,
    )
    kwargs = to_vllm(params)
    assert set(kwargs) <= VLLM_SAMPLING_FIELDS
    assert kwargs == {
        "n": 2,
        "presence_penalty": 0.4,
        "frequency_penalty": -0.3,
        "repetition_penalty": 1.2,
        "temperature": 0.5,
        "top_p": 0.8,
        "top_k": 40,
        "min_p": 0.05,
        "seed": 7,
        "stop_token_ids": [13, 198],
        "max_tokens": 12,
        "min_tokens": 3,
    }
    assert to_vllm(params) == kwargs
    json.dumps(kwargs)  # plain data


@pytest.mark.parametrize(
    ("params", "temperature", "top_k"),
    [
        (SamplingParams(do_sample=False, temperature=0.7), 0.0, None),  # vLLM has no do_sample
        (SamplingParams(temperature=0.0), 0.0, None),
        (SamplingParams(temperature=0.9, top_k=-1), 0.9, None),  # all tokens: left out (0.8.5 rejects 0)
        (SamplingParams(temperature=0.9, top_k=5), 0.9, 5),
    ],
)
def test_vllm_greedy_and_all_tokens(params, temperature, top_k):
    """top_k "off" is left out of every export: vLLM 0.8.5 and older answer top_k=0 with HTTP 400."""
    kwargs = to_vllm(params)
    assert kwargs["temperature"] == temperature and kwargs.get("top_k") == top_k
    body = to_openai(params, model="m", http=True)
    assert body.get("top_k") == top_k and to_openai(params, model="m")["extra_body"].get("top_k") == top_k
    assert ("top_k=" in snippet(params, "vllm")) == (top_k is not None)


@pytest.mark.parametrize(
    ("params", "field"),
    [(SamplingParams(temperature=2.5), "temperature"), (SamplingParams(temperature=0, n=3), "n")],
)
def test_vllm_rejects_what_it_cannot_hold(params, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        to_vllm(params)
    with pytest.raises(ValueError, match=rf"^{field}="):
        to_openai(params, model="m")


def test_vllm_raises_tiny_temperatures_and_says_so():
    with pytest.warns(ExportWarning, match=r"temperature=0.005.*0.01"):
        assert to_vllm(SamplingParams(temperature=0.005))["temperature"] == 0.005


def test_vllm_object(monkeypatch):
    if "vllm" not in sys.modules:
        with pytest.raises(ImportError, match="needs vLLM"):
            to_vllm(SamplingParams(), as_object=True)
    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kwargs: ("vllm.SamplingParams", kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    params = SamplingParams(temperature=0.3, top_k=5)
    assert to_vllm(params, as_object=True) == ("vllm.SamplingParams", to_vllm(params))


# -- OpenAI ----------------------------------------------------------------------------------------------------


def test_openai_body_field_names_and_warning(lm):
    params = SamplingParams(
        max_new_tokens=20, temperature=0.7, top_p=0.9, top_k=30, min_p=0.05, repetition_penalty=1.1, seed=3
    )
    with pytest.warns(ExportWarning, match=r"plain OpenAI endpoint.*top_k=30.*min_p=0.05.*repetition_penalty=1.1"):
        body = to_openai(
            params, model="HuggingFaceTB/SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Hi"}]
        )
    top = set(body) - {"extra_body"}
    assert top <= OPENAI_CHAT_FIELDS
    assert set(body["extra_body"]) <= VLLM_CHAT_EXTRA_FIELDS
    assert body["max_completion_tokens"] == 20 and "max_tokens" not in body  # max_tokens is deprecated
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["seed"] == 3 and body["n"] == 1
    assert body["extra_body"] == {
        "top_k": 30,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "min_tokens": 0,
        "stop_token_ids": [],
    }
    json.dumps(body)


def test_openai_no_warning_when_the_body_alone_samples_the_same():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        body = to_openai(SamplingParams(temperature=0.4, top_p=0.5, presence_penalty=1.0), model="m")
    assert "seed" not in body  # unset: the server picks


def test_openai_stop_strings_from_the_tokenizer(lm):
    newline = lm.tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    params = SamplingParams(stop_token_ids=[newline])
    with pytest.warns(ExportWarning, match="stop_token_ids"):
        body = to_openai(params, model="m", tokenizer=lm)
    assert body["stop"] == ["\n"] and body["extra_body"]["stop_token_ids"] == [newline]
    assert from_openai(body, tokenizer=lm) == params
    assert from_openai({"stop": ["\n"]}, tokenizer=lm) == params  # a one-token stop string becomes a stop id


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (SamplingParams(seed=2**63), r"^seed=9223372036854775808.*64-bit"),
        (SamplingParams(temperature=3), r"^temperature"),
    ],
)
def test_openai_rejects_what_it_cannot_hold(params, match):
    with pytest.raises(ValueError, match=match):
        to_openai(params, model="m")


def test_openai_needs_a_model_name():
    with pytest.raises(ValueError, match="model must be"):
        to_openai(SamplingParams(), model="")


# -- round trips -------------------------------------------------------------------------------------------------

exportable = st.builds(
    SamplingParams,
    max_new_tokens=st.integers(8, 512),
    do_sample=st.booleans(),
    temperature=st.one_of(st.just(0.0), st.floats(0.01, 2)),
    top_p=st.floats(0, 1, exclude_min=True),
    top_k=st.integers(-1, 1000),
    min_p=st.floats(0, 1),
    repetition_penalty=st.floats(0.01, 5),
    presence_penalty=st.floats(-2, 2),
    frequency_penalty=st.floats(-2, 2),
    seed=st.none() | st.integers(0, 2**63 - 1),
    min_tokens=st.integers(0, 8),
    stop_token_ids=st.lists(st.integers(3, 49151), max_size=4, unique=True),
    n=st.integers(1, 4),
).filter(lambda p: not (p.greedy and p.n > 1))


@settings(max_examples=200, deadline=None)
@given(exportable)
def test_openai_round_trip(params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExportWarning)
        back = from_openai(to_openai(params, model="m"))
    assert equivalent(back, params)
    if not params.greedy:  # lossless
        assert back == params


@settings(max_examples=200, deadline=None)
@given(exportable)
def test_vllm_round_trip(params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExportWarning)
        back = from_openai(to_vllm(params))  # vLLM's names (max_tokens) are read too
    assert equivalent(back, params)


@settings(max_examples=200, deadline=None)
@given(exportable)
def test_generation_config_round_trip(params):
    gc, procs = to_transformers(params, prompt_length=5, eos_token_id=2, pad_token_id=2)
    back = from_generation_config(gc, procs, eos_token_id=2)
    # A GenerationConfig holds no seed (torch's generator does) and no n (the batch does); the model's own EOS
    # is no stop id.
    expected = params.replace(seed=None, n=1, stop_token_ids=[t for t in params.stop_token_ids if t != 2])
    assert equivalent(back, expected)
    if not params.greedy:
        assert back == expected


def test_generation_config_from_json_dict():
    gc, _ = to_transformers(SamplingParams(temperature=0.5, top_k=7), eos_token_id=2)
    assert from_generation_config(json.loads(gc.to_json_string())) == SamplingParams(temperature=0.5, top_k=7)


# -- what cannot cross -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"num_beams": 4}, "num_beams=4"),
        ({"do_sample": True, "typical_p": 0.9}, "typical_p=0.9"),
        ({"do_sample": True, "epsilon_cutoff": 3e-4, "eta_cutoff": 1e-3}, "epsilon_cutoff=0.0003, eta_cutoff=0.001"),
        ({"no_repeat_ngram_size": 3}, "no_repeat_ngram_size=3"),
    ],
)
def test_generation_config_fields_that_cannot_cross(fields, named):
    gc = GenerationConfig(max_new_tokens=8, **fields)
    with pytest.raises(ValueError, match=named):
        from_generation_config(gc)
    with pytest.warns(ExportWarning, match="vLLM server ignores"):  # vLLM reads past them
        from_generation_config(gc, defaults="vllm")


def test_generation_config_foreign_processor():
    with pytest.raises(ValueError, match="TopKLogitsWarper"):
        from_generation_config(GenerationConfig(max_new_tokens=4), LogitsProcessorList([TopKLogitsWarper(5)]))


def test_generation_config_unset_fields_read_as_each_stack_does():
    gc = GenerationConfig(do_sample=True, temperature=0.6, top_p=0.9, max_new_tokens=30)
    with pytest.warns(ExportWarning, match="top_k=50"):
        assert from_generation_config(gc) == SamplingParams(max_new_tokens=30, temperature=0.6, top_p=0.9, top_k=50)
    assert from_generation_config(gc, defaults="vllm") == SamplingParams(max_new_tokens=30, temperature=0.6, top_p=0.9)
    greedy = GenerationConfig(temperature=0.6, max_new_tokens=30)  # do_sample unset: transformers decodes greedily
    assert from_generation_config(greedy).greedy
    assert not from_generation_config(greedy, defaults="vllm").greedy  # vLLM samples at 0.6
    with pytest.warns(ExportWarning, match="max_length=20 counts the prompt"):
        from_generation_config(GenerationConfig(max_length=20))


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        ({"logit_bias": {"50": 5}}, ValueError, "logit_bias"),
        ({"response_format": {"type": "json_object"}}, ValueError, "response_format"),
        ({"extra_body": {"use_beam_search": True}}, ValueError, "use_beam_search"),
        ({"temperature": -1}, ValueError, "temperature"),
        ({"top_p": 1.5}, ValueError, "top_p"),
        ({"seed": -5}, ValueError, "seed"),
        ({"extra_body": {"top_k": 2.5}}, TypeError, "top_k"),
        ("temperature=1", TypeError, "body"),
    ],
)
def test_openai_import_errors_name_the_field(body, error, match):
    with pytest.raises(error, match=match):
        from_openai(body)


def test_openai_import_warns_for_what_it_drops(lm):
    with pytest.warns(ExportWarning, match="not imported.*frobnicate"):
        from_openai({"model": "m", "frobnicate": 1})
    with pytest.warns(ExportWarning, match=r"stop strings \['THE END'\]"):
        assert from_openai({"stop": "THE END"}) == SamplingParams()
    assert from_openai({"seed": -1}).seed is None  # vLLM's "no seed"
    assert from_openai({"temperature": None, "messages": [], "stream": True}) == SamplingParams()
    nudge = SamplingParams(temperature=0.6, top_p=0.9)
    assert from_openai({"top_p": 0.5}, defaults=nudge) == SamplingParams(temperature=0.6, top_p=0.5)


def test_openai_newer_max_name_wins_in_any_order():
    """max_completion_tokens (OpenAI's newer name) wins over max_tokens, whichever comes first or where."""
    bodies = [{"max_completion_tokens": 20, "max_tokens": 10}, {"max_tokens": 10, "max_completion_tokens": 20},
              {"max_completion_tokens": 20, "extra_body": {"max_tokens": 10}}]  # fmt: skip
    assert [from_openai(b).max_new_tokens for b in bodies] == [20, 20, 20]
    assert from_openai({"max_completion_tokens": None, "max_tokens": 10}).max_new_tokens == 10


def test_openai_keys_must_be_names():
    with pytest.raises(TypeError, match=r"body keys must be strings \(JSON field names\), got 3 \(int\)"):
        from_openai({3: 1, "temperature": 0.5})
    with pytest.raises(TypeError, match=r"extra_body keys .*got \('top', 'k'\) \(tuple\)"):
        from_openai({"extra_body": {("top", "k"): 5}})


def test_openai_many_dropped_stop_strings_are_summarised():
    """100,000 stop strings that cannot cross: a warning of a few lines, naming how many, not a 500 KB one."""
    with pytest.warns(ExportWarning) as caught:
        from_openai({"stop": [f"never {i}" for i in range(100_000)], **{f"x{i}": 1 for i in range(1_000)}})
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all(len(m) < 400 for m in messages), messages
    assert "(100,000 in all)" in messages[1] and "'never 0'" in messages[1] and "(1,000 in all)" in messages[0]


def test_model_defaults(lm, tmp_path):
    # The embedded model's generation_config.json sets no sampling fields: transformers' generate decodes
    # greedily, a vLLM server samples at temperature 1 over all tokens.
    assert from_model_defaults(lm).greedy
    assert from_model_defaults(lm, defaults="vllm") == SamplingParams()
    GenerationConfig(do_sample=True, temperature=0.6, top_p=0.9, eos_token_id=[2, 5]).save_pretrained(tmp_path)
    with pytest.warns(ExportWarning, match="top_k=50"):
        as_transformers = from_model_defaults(str(tmp_path))
    assert as_transformers == SamplingParams(temperature=0.6, top_p=0.9, top_k=50)  # eos ids stay the model's
    assert from_model_defaults(tmp_path, defaults="vllm") == SamplingParams(temperature=0.6, top_p=0.9)
    with pytest.raises(TypeError, match="source must be"):
        from_model_defaults(3)


# -- parity with plain transformers --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("prompt", "params"), list(zip(PROMPTS + PROMPTS, PRESETS, strict=False)), ids=repr)
def test_exported_config_samples_what_smolkit_shows(lm, prompt, params):
    """Four steps of a plain ``model.generate``: each step's distribution is the one next_token_distribution shows
    for the same prompt and generated tokens (penalties and min_tokens included)."""
    inputs, gc, procs = exported(lm, params, prompt)
    prompt_length = inputs["input_ids"].shape[1]
    torch.manual_seed(0)
    out = plain_generate(lm, inputs, gc, procs, max_new_tokens=4, output_scores=True, return_dict_in_generate=True)
    generated = out.sequences[0, prompt_length:].tolist()
    for step, scores in enumerate(out.scores):
        shown = next_token_distribution(lm, prompt, params, generated=generated[:step])
        plain = torch.softmax(scores[0].float(), dim=-1)
        assert torch.allclose(plain, shown.probs, atol=PROB_ATOL, rtol=0), f"step {step}"
        assert int((plain > 0).sum()) == shown.surviving()


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_exported_greedy_config_gives_smolkit_greedy_tokens(lm, prompt):
    params = SamplingParams(temperature=0, max_new_tokens=8, repetition_penalty=1.2)
    inputs, gc, procs = exported(lm, params, prompt)
    out = plain_generate(lm, inputs, gc, procs)
    assert tuple(out[0, inputs["input_ids"].shape[1] :].tolist()) == smolkit.generate(lm, prompt, params).token_ids


@pytest.mark.slow
def test_model_generation_defaults_do_not_leak(lm):
    """A model whose generation_config.json switches stages on (and plain transformers' top_k=50): the exported
    config still samples from exactly the distribution smolkit shows for the preset, over all tokens."""
    prompt, params = PROMPTS[1], SamplingParams(temperature=1.2)
    shown = next_token_distribution(lm, prompt, params)
    assert shown.surviving() > 1000  # top_k=-1: every token can be drawn
    noisy = GenerationConfig(
        do_sample=False,
        temperature=0.3,
        top_k=20,
        top_p=0.5,
        min_p=0.2,
        typical_p=0.5,
        repetition_penalty=1.3,
        no_repeat_ngram_size=2,
        eos_token_id=2,
        pad_token_id=2,
    )
    for model_config in (noisy, GenerationConfig(eos_token_id=2, pad_token_id=2)):
        with model_generation_config(lm, model_config):
            inputs, gc, procs = exported(lm, params, prompt)
            out = plain_generate(
                lm, inputs, gc, procs, max_new_tokens=1, output_scores=True, return_dict_in_generate=True
            )
            plain = torch.softmax(out.scores[0][0], dim=-1)
            assert torch.allclose(plain, shown.probs, atol=PROB_ATOL, rtol=0)
            # The control: the same values passed the plain way pick up the model's stages or top_k=50.
            naive = GenerationConfig(do_sample=True, temperature=1.2, max_new_tokens=1)
            naive.update(output_scores=True, return_dict_in_generate=True)
            out = plain_generate(lm, inputs, naive, LogitsProcessorList())
            assert int((out.scores[0][0] > -float("inf")).sum()) <= 50


# -- snippets ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", SNIPPET_TARGETS)
@pytest.mark.parametrize("params", [*PRESETS, SamplingParams(temperature=0, seed=5), SamplingParams(n=3, seed=1)])
def test_snippets_compile(target, params):
    code = snippet(params, target)
    compile(code, f"<{target} snippet>", "exec")
    assert len(code.splitlines()) <= 40


NUMPY_VALUES = {"model": np.str_("my/model"), "prompt": np.str_("Hi")}


@pytest.mark.parametrize("target", SNIPPET_TARGETS)
def test_snippets_write_plain_literals_from_numpy_values(target):
    """numpy values become the Python values they hold (LLM(model=np.str_('m')) would not run without numpy);
    the code parses, and its literals are plain."""
    params = SamplingParams(temperature=np.float32(0.7), top_k=np.int64(20), seed=np.int64(3), n=np.int64(2),
                            presence_penalty=np.float64(0.5), stop_token_ids=np.array([198, 2]))  # fmt: skip
    code = snippet(params, target, **NUMPY_VALUES)
    _assert_plain(code)
    assert "'my/model'" in code and "np." not in code and "0.7" in code


def _assert_plain(code: str) -> None:
    tree = ast.parse(code)
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"str_", "int64", "float32", "float64", "array", "nan", "inf"}, calls
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"np", "nan", "inf", "numpy"}, names


@pytest.mark.parametrize("target", ["transformers", "vllm"])
def test_beam_snippets_validate_and_write_plain_literals(target, monkeypatch, capsys):
    code = beam_snippet(np.int64(3), target, max_new_tokens=np.int64(20), length_penalty=np.float32(0.5),
                        model=np.str_("my/model"), prompt=np.str_("Hi"))  # fmt: skip
    _assert_plain(code)
    assert "max_new_tokens=20" in code or "max_tokens=20" in code
    for bad, match in [({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": 2.5}, "max_new_tokens"),
                       ({"length_penalty": float("nan")}, "length_penalty"), ({"model": 3}, "model"),
                       ({"prompt": b"Hi"}, "prompt")]:  # fmt: skip
        with pytest.raises((TypeError, ValueError), match=match):
            beam_snippet(3, target, **bad)
    if target == "vllm":  # cheap to run with a stand-in vllm: the values arrive as plain Python values
        seen = {}

        class LLM:
            def __init__(self, model):
                seen["model"] = model

            def get_tokenizer(self):
                return types.SimpleNamespace(apply_chat_template=lambda messages, **kw: messages[0]["content"])

            def beam_search(self, prompts, params):
                seen["prompts"], seen["params"] = prompts, params
                return [types.SimpleNamespace(sequences=[])]

        fake, sampling = types.ModuleType("vllm"), types.ModuleType("vllm.sampling_params")
        fake.LLM, sampling.BeamSearchParams = LLM, lambda **kwargs: kwargs
        monkeypatch.setitem(sys.modules, "vllm", fake)
        monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
        exec(code, {})
        assert seen == {"model": "my/model", "prompts": [{"prompt": "Hi"}],
                        "params": {"beam_width": 3, "max_tokens": 20, "length_penalty": 0.5}}  # fmt: skip
        assert all(type(v) in (int, float) for v in seen["params"].values())


def test_snippet_rejects_unknown_targets():
    with pytest.raises(ValueError, match=r"target must be one of 'transformers', 'vllm', 'openai', got 'tgi'"):
        snippet(SamplingParams(), "tgi")
    with pytest.raises(ValueError, match=r"^temperature"):
        snippet(SamplingParams(temperature=2.5), "vllm")


def test_vllm_snippet_passes_the_exported_values(monkeypatch, capsys):
    params = SamplingParams(temperature=0.7, top_p=0.9, min_p=0.05, seed=3, stop_token_ids=[198])
    seen = {}

    class LLM:
        def __init__(self, model, tokenizer=None):
            seen["model"], seen["tokenizer"] = model, tokenizer

        def chat(self, messages, sampling):
            seen["messages"], seen["sampling"] = messages, sampling
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text="ok")])]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "vllm", fake)
    exec(snippet(params, "vllm", prompt="Hi"), {})  # by default the kit's own model, offline
    assert seen == {
        "model": str(embedded_gguf_path()),
        "tokenizer": embedded_folder(),
        "messages": [{"role": "user", "content": "Hi"}],
        "sampling": to_vllm(params),
    }
    assert capsys.readouterr().out == "ok\n"


@pytest.fixture
def openai_request(monkeypatch):
    """A stand-in ``openai`` module: the client records what ``chat.completions.create`` is sent (the dict
    returned here) and answers "ok" once per requested completion (``n``)."""
    seen = {}

    class Completions:
        def create(self, **kwargs):
            seen.update(kwargs)
            message = types.SimpleNamespace(content="ok")
            return types.SimpleNamespace(choices=[types.SimpleNamespace(message=message)] * kwargs.get("n", 1))

    class OpenAI:
        def __init__(self, base_url, api_key):
            self.chat = types.SimpleNamespace(completions=Completions())

    fake = types.ModuleType("openai")
    fake.OpenAI = OpenAI
    monkeypatch.setitem(sys.modules, "openai", fake)
    return seen


def test_openai_snippet_passes_the_exported_body(openai_request, capsys):
    params = SamplingParams(temperature=0.7, top_k=40, repetition_penalty=1.1, n=2)
    seen = openai_request
    exec(snippet(params, "openai", model="smol", prompt="Hi"), {})
    with pytest.warns(ExportWarning):
        assert seen == to_openai(params, model="smol", messages=[{"role": "user", "content": "Hi"}])
    assert capsys.readouterr().out == "ok\nok\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0, max_new_tokens=12),
        SamplingParams(temperature=0.9, top_p=0.95, presence_penalty=0.6, seed=11, max_new_tokens=12),
    ],
    ids=repr,
)
def test_transformers_snippet_generates_what_smolkit_generates(lm, params, capsys):
    """The pasted code, as the notebooks print it (the kit's converted model, offline): the same text as
    smolkit.generate (same seed too)."""
    prompt = "Name three fruits."
    code = snippet(params, "transformers", prompt=prompt)
    assert "from_pretrained(smolkit.embedded_folder())" in code
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(code, {})
    assert capsys.readouterr().out == smolkit.generate(lm, prompt, params).text + "\n"


def test_vision_snippet_uses_the_processor():
    code = snippet(SamplingParams(temperature=0.5), "transformers", model="HuggingFaceTB/SmolVLM-256M-Instruct")
    assert "AutoProcessor" in code and "AutoModelForImageTextToText" in code and '"type": "text"' not in code
    assert "'type': 'text'" in code
    assert "{'type': 'image', 'image': image}" in code and "smolkit.sample_image('red_ball')" in code


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2])
def test_vision_snippet_describes_the_picture(tiny_vlm_dir, n, capsys):
    """The transformers lines for SmolVLM (its architecture, the tiny random stand-in) run as printed and hand the
    picture to generate: the processor's pixel values, one row per sample."""
    params = SamplingParams(temperature=0.7, seed=1, n=n, max_new_tokens=3)
    code = snippet(params, "transformers", model=str(tiny_vlm_dir), vision=True)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(code, namespace)
    assert namespace["inputs"]["pixel_values"].shape[0] == n
    assert namespace["out"].shape[0] == n and len(capsys.readouterr().out.splitlines()) >= n


def test_vllm_vision_snippet_passes_the_picture(monkeypatch, capsys):
    params = SamplingParams(temperature=0.5)
    seen = {}

    class LLM:
        def __init__(self, model):
            seen["model"] = model

        def chat(self, messages, sampling):
            seen["messages"], seen["sampling"] = messages, sampling
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text="a red ball")])]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "vllm", fake)
    exec(snippet(params, "vllm", model="HuggingFaceTB/SmolVLM-256M-Instruct", prompt="Describe it."), {})
    (message,) = seen["messages"]
    picture, text = message["content"]
    assert picture["type"] == "image_pil"
    assert picture["image_pil"].tobytes() == smolkit.sample_image("red_ball").tobytes()
    assert text == {"type": "text", "text": "Describe it."} and seen["sampling"] == to_vllm(params)
    assert seen["model"] == "HuggingFaceTB/SmolVLM-256M-Instruct" and capsys.readouterr().out == "a red ball\n"


def test_openai_vision_snippet_sends_the_picture_as_a_data_url(openai_request, capsys):
    import base64
    import io

    from PIL import Image

    params = SamplingParams(temperature=0.5, min_p=0.1)
    seen = openai_request
    exec(snippet(params, "openai", model="HuggingFaceTB/SmolVLM-256M-Instruct", prompt="Describe it."), {})
    (message,) = seen.pop("messages")
    picture, text = message["content"]
    prefix = "data:image/png;base64,"
    assert picture["type"] == "image_url" and picture["image_url"]["url"].startswith(prefix)
    sent = Image.open(io.BytesIO(base64.b64decode(picture["image_url"]["url"][len(prefix) :])))
    assert sent.convert("RGB").tobytes() == smolkit.sample_image("red_ball").tobytes()
    assert text == {"type": "text", "text": "Describe it."}
    with pytest.warns(ExportWarning):
        expected = to_openai(params, model="HuggingFaceTB/SmolVLM-256M-Instruct", messages=[])
    assert seen == {k: v for k, v in expected.items() if k != "messages"}
    assert capsys.readouterr().out == "ok\n"


# -- explain -----------------------------------------------------------------------------------------------------

EXPLAINED = [
    SamplingParams(),
    SamplingParams(temperature=0.7, top_p=0.9, min_p=0.05),
    SamplingParams(temperature=1.1, top_k=30, repetition_penalty=1.2, presence_penalty=0.5, frequency_penalty=0.2),
    SamplingParams(temperature=0.8, min_tokens=3, stop_token_ids=[198]),
    SamplingParams(do_sample=False, temperature=0.7),
]


@pytest.mark.slow
@pytest.mark.parametrize("params", EXPLAINED, ids=repr)
def test_explain_order_is_what_generate_builds(lm, params, monkeypatch):
    """Record the LogitsProcessorList that a real smolkit.generate call makes transformers build."""
    built = []
    original = lm.model._get_logits_processor

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(lm.model, "_get_logits_processor", spy)
    smolkit.generate(lm, PROMPTS[0], params.replace(max_new_tokens=max(params.min_tokens, 1)))
    monkeypatch.undo()
    assert explain(params, lm).stage_names == [stage_name(p) for p in built[0]]


@pytest.mark.slow
def test_explain_on_a_vision_model(tiny_vlm, monkeypatch):
    """SmolVLM's architecture (the tiny random stand-in): the same reading of what generate builds."""
    params = SamplingParams(temperature=0.7, top_k=10, min_tokens=1, max_new_tokens=1)
    built = []
    original = tiny_vlm.model._get_logits_processor
    monkeypatch.setattr(
        tiny_vlm.model, "_get_logits_processor", lambda *a, **k: built.append(original(*a, **k)) or built[-1]
    )
    smolkit.generate(tiny_vlm, "Hi", params)
    monkeypatch.undo()
    ex = explain(params, tiny_vlm)
    assert ex.stage_names == [stage_name(p) for p in built[0]]
    assert ex.stage_names == ["min_length", "min_tokens", "temperature", "top_k"]
    assert "AutoModelForImageTextToText" in snippet(params, "transformers", model=str(tiny_vlm.name), vision=True)


@pytest.mark.parametrize("params", EXPLAINED, ids=repr)
def test_explain_list_is_the_kits(lm, params):
    """explain's list is the kit's (processors_for, what Distribution.stages shows), including the
    MinLengthLogitsProcessor generate derives from min_new_tokens: min_length = prompt + min_tokens, which blocks
    nothing beyond what min_tokens blocks, and exists only when min_tokens > 0."""
    ids = torch.tensor([[1, 2, 3]])
    kit = processors_for(lm, params, ids, 3)
    derived = [p for p in kit if type(p).__name__ == "MinLengthLogitsProcessor"]
    assert [p.min_length for p in derived] == ([3 + params.min_tokens] if params.min_tokens else [])
    expected = processors_for(lm, params, torch.tensor([[2]]), 1)
    assert explain(params, lm).stage_names == [stage_name(p) for p in expected]


def test_explain_values_sources_and_surprises(lm):
    params = SamplingParams(temperature=0.7, top_p=0.9, min_p=0.05, repetition_penalty=1.1, presence_penalty=0.3)
    ex = explain(params, lm)
    assert ex.stage_names == ["repetition_penalty", "presence_penalty", "temperature", "top_p", "min_p"]
    assert {s.name: s.values for s in ex.stages}["top_p"] == {"top_p": 0.9}
    assert all(s.source.startswith("your preset") for s in ex.stages)
    with_min = explain(params.replace(min_tokens=3), lm)
    derived = with_min.stages[with_min.stage_names.index("min_length")]
    assert derived.values == {"min_length": "prompt + 3"} and "the same block as min_tokens" in derived.source
    assert ex.vllm_order == ("repetition_penalty", "presence_penalty", "temperature", "min_p", "top_p")
    assert ex.note_kinds == [
        "top_k_default",
        "top_k_all",
        "min_p_order",
        "repetition_counts_prompt",
        "penalties_count_generated",
    ]
    top_k = next(s for s in ex.plain_stages if s.name == "top_k")
    assert top_k.values == {"top_k": 50} and top_k.source == "transformers' default"
    text = str(ex)
    table = text.split("stages, in generate's order:")[1]
    assert table.index("repetition_penalty=1.1") < table.index("temperature=0.7") < table.index("min_p=0.05")
    assert "vLLM's order for the same stages: repetition_penalty, presence_penalty, temperature, min_p, top_p" in text
    assert "top_k=50 (transformers' default)" in text


def test_explain_greedy(lm):
    ex = explain(SamplingParams(do_sample=False, temperature=0.7, top_p=0.5), lm)
    assert ex.stage_names == [] and ex.note_kinds == ["greedy_ignores_sampling"]
    assert "temperature=0.7, top_p=0.5 change nothing" in str(ex)
    assert explain(SamplingParams(temperature=0), lm).note_kinds == ["temperature_zero"]


def test_explain_with_a_models_own_sampling_defaults(lm):
    """A generation_config.json that sets sampling fields (as many Hub models do): the plain call picks them up,
    smolkit switches them off, a vLLM server would use them as request defaults."""
    config = GenerationConfig(do_sample=True, temperature=0.6, top_p=0.9, top_k=20, min_p=0.1, eos_token_id=2)
    ex = explain(SamplingParams(temperature=0.7), lm, generation_config=config)
    assert ex.stage_names == ["temperature", "min_p"]
    assert ex.stages[1].values == {"min_p": 0.0} and ex.stages[1].source.startswith("smolkit (switches off")
    sources = {s.name: s.source for s in ex.plain_stages}
    assert sources == {
        "temperature": "your preset",
        "top_k": "the model's generation config",
        "top_p": "the model's generation config",
        "min_p": "the model's generation config",
    }
    assert ex.note_kinds.count("plain_generate_differs") == 3 and "vllm_server_defaults" in ex.note_kinds
    assert "temperature=0.6, top_k=20, top_p=0.9, min_p=0.1 (and ignores its do_sample)" in str(ex)
    assert lm.model.generation_config.top_k is None  # the model's own config is back


def test_explain_pretty(lm):
    ex = explain(SamplingParams(temperature=0.5), lm)
    printed = []
    ex._repr_pretty_(types.SimpleNamespace(text=printed.append), False)
    assert printed == [str(ex)] and str(ex).startswith("What generate runs for 'embedded'")
    with pytest.raises(TypeError, match="params must be"):
        explain({"temperature": 0.5}, lm)


def test_vllm_order_keeps_other_tokens(lm):
    """min_p before top_p (vLLM) can keep fewer tokens than after it (transformers), on the same logits."""
    params = SamplingParams(temperature=1.0, top_p=0.75, min_p=0.4)
    logits = torch.full((lm.vocab_size,), -1e4)
    logits[:4] = torch.tensor([0.4, 0.3, 0.2, 0.1]).log()
    inputs, prompt_length = prepare_inputs(lm, "Hi", params)
    dist = Distribution.from_logits(lm, params, logits, inputs["input_ids"], prompt_length)
    assert dist.surviving() == 3
    vllm = dist.in_vllm_order().probs
    assert int((vllm > 0).sum()) == 2 and torch.allclose(vllm[:2], torch.tensor([4 / 7, 3 / 7]))
    same = Distribution.from_logits(lm, params.replace(min_p=0.0), logits, inputs["input_ids"], prompt_length)
    assert torch.allclose(same.in_vllm_order().probs, same.probs)  # no min_p: the order does not matter


# -- the explorer's "copy this preset" button ------------------------------------------------------------------


@pytest.mark.slow
def test_explorer_copy_button(lm):
    from smolkit.widgets import DistributionExplorer

    explorer = DistributionExplorer(lm, PROMPTS[0], SamplingParams(temperature=0.7))
    panel = explorer.export
    assert panel.code.value == "" and panel.code.layout.display == "none"
    panel.button.click()
    assert panel.code.value == snippet(SamplingParams(temperature=0.7), "transformers", prompt=PROMPTS[0])
    panel.target.value = "vllm"
    assert panel.code.value == snippet(SamplingParams(temperature=0.7), "vllm", prompt=PROMPTS[0])
    explorer.update(temperature=0.4)  # a slider move: the code is not rewritten, only marked out of date
    assert "temperature=0.7" in panel.code.value and "settings changed" in panel.status.value
    panel.button.click()
    assert "temperature=0.4" in panel.code.value and "settings changed" not in panel.status.value


LM_STANDIN = types.SimpleNamespace(name="m", is_vision=False, model=None)
"""Enough of a LoadedModel for the export panel: its name and kind (no generation config of its own)."""


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SNIPPET_TARGETS), st.floats(2.01, 5))
def test_explorer_panel_reports_unexportable_settings(target, temperature):
    from smolkit.widgets import PresetExport

    panel = PresetExport(lambda: SamplingParams(temperature=temperature), LM_STANDIN)
    panel.target.value = target
    text = panel.show()
    if target == "transformers":  # transformers has no upper bound
        assert text.startswith("import torch")
    else:
        assert text.startswith(f"# cannot export to {target}: temperature=") and "cannot hold" in panel.status.value


# -- issue 17: what the model's own generation config adds, and hostile names ------------------------------------


def test_stages_a_models_config_adds_are_named_by_the_exports(lm):
    """suppress_tokens in a generation_config.json: generate applies it and explain shows it; to_vllm, to_openai and
    the vLLM/OpenAI snippets cannot carry it and now say so, naming the field (they dropped it silently)."""
    base = GenerationConfig(**{**lm.model.generation_config.to_dict(), "suppress_tokens": [504]})
    params = SamplingParams(temperature=0.7)
    with model_generation_config(lm, base):
        assert "suppress_tokens" in explain(params, lm).stage_names
        assert next_token_distribution(lm, PROMPTS[0], params).prob_of(504) == 0.0
        for export in (
            lambda: to_vllm(params, lm=lm),
            lambda: to_openai(params, lm=lm),
            lambda: snippet(params, "vllm", lm=lm),
            lambda: snippet(params, "openai", lm=lm),
        ):
            with pytest.warns(ExportWarning, match=r"suppress_tokens=\[504\].*cannot carry it"):
                export()
        with warnings.catch_warnings():
            warnings.simplefilter("error", ExportWarning)  # transformers reads the same file: nothing is lost
            assert "from_pretrained(smolkit.embedded_folder())" in snippet(params, "transformers", lm=lm)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExportWarning)
        to_vllm(params, lm=lm)  # the model's own config adds nothing hidden


HOSTILE = ["m\nimport os; os.system('echo pwned')", "x') or __import__('os').system('id') #", "a\"\"\"b\r\n'''c"]


def _shape(code: str) -> str:
    """The code's syntax tree with every string constant blanked: what the code does, not what it says."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
    return ast.dump(tree)


@pytest.mark.parametrize("target", SNIPPET_TARGETS)
@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_model_names_and_prompts_stay_strings(target, name):
    """A model name (or prompt) that holds code or newlines becomes a string in the snippet, never code, and no
    comment holds it: the snippet does exactly what it does for a plain name."""
    params = SamplingParams(temperature=0.7, presence_penalty=0.2, stop_token_ids=[13], seed=1, n=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExportWarning)
        hostile = snippet(params, target, model=name, prompt=name)
        plain = snippet(params, target, model="owner/model", prompt="Hi")
    assert _shape(hostile) == _shape(plain)
    comments = [line for line in hostile.splitlines() if line.lstrip().startswith("#")]
    pieces = [piece for piece in name.splitlines() if len(piece) >= 5]
    assert not any(piece in line for piece in pieces for line in comments), comments
