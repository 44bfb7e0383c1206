"""Beam search, run by transformers' own ``generate(num_beams=...)``, with the scores it ranks the beams by.

Greedy decoding takes the most likely token at each step; that need not give the most likely sequence (a likely
first token can lead to unlikely ones after it). Beam search keeps the ``num_beams`` best partial sequences at
every step and returns the best finished ones, ranked by transformers' score: the sum of the tokens'
log-probabilities divided by length ** ``length_penalty``. vLLM runs beam search outside ``SamplingParams``
(``LLM.beam_search`` with ``BeamSearchParams``), so it is not a preset; this module is not either.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import torch

from smolkit import _checks, gpu_share
from smolkit.distribution import prepare_inputs
from smolkit.generation import check_fits, fit_context, planned_bytes
from smolkit.hf import for_model
from smolkit.models import LoadedModel
from smolkit.params import SamplingParams
from smolkit.sequences import score_continuation
from smolkit.snippets import EMBEDDED_MODEL, _transformers_load, code, model_name, source, vllm_llm_lines

__all__ = [
    "LENGTH_PENALTY_RANGE",
    "MAX_BEAMS",
    "Beam",
    "BeamNode",
    "BeamSearchResult",
    "beam_search",
    "beam_snippet",
    "beam_tree",
]

MAX_BEAMS = 16
"""The most beams the kit runs (each beam is one more row in every forward pass)."""

LENGTH_PENALTY_RANGE = (-10.0, 10.0)
"""The kit's range for length_penalty (transformers and vLLM take any float; 1 is their default). The score divides
by length ** length_penalty: beyond +-10 a 20-token beam's divisor is 1e13 and length alone decides the ranking,
and a huge value overflows only after the search."""


def search_settings(num_beams: Any, max_new_tokens: Any, length_penalty: Any) -> tuple[int, int, float]:
    """num_beams (1 to MAX_BEAMS), max_new_tokens (>= 1) and length_penalty (LENGTH_PENALTY_RANGE), checked: the
    rule beam_search and beam_snippet share."""
    lo, hi = LENGTH_PENALTY_RANGE
    return (
        _checks.integer("num_beams", num_beams, lo=1, hi=MAX_BEAMS),
        _checks.integer("max_new_tokens", max_new_tokens, lo=1),
        _checks.number("length_penalty", length_penalty, lo, hi, "0 compares sums; > 0 favours longer beams"),
    )


@dataclasses.dataclass(frozen=True)
class Beam:
    """One returned sequence: its tokens (through the stop token, if it stopped), text, the sum of its tokens'
    log-probabilities under the model's own distribution, and transformers' ``score`` for it (the sum of the
    log-probabilities beam search used, after any penalties, over length ** length_penalty)."""

    token_ids: tuple[int, ...]
    text: str
    logprob: float
    score: float
    finished: bool

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclasses.dataclass(frozen=True)
class BeamSearchResult:
    """What ``beam_search`` returns: the settings it ran with and the beams, best first."""

    prompt: str
    num_beams: int
    length_penalty: float
    early_stopping: bool | str
    no_repeat_ngram_size: int
    beams: tuple[Beam, ...]
    seconds: float

    @property
    def best(self) -> Beam:
        return self.beams[0]

    def rows(self) -> list[dict[str, Any]]:
        """One row per beam: rank, tokens, log-probability, transformers' score, whether it stopped, its text."""
        return [
            {"rank": i + 1, "tokens": len(b), "logprob": b.logprob, "score": b.score, "stopped": b.finished,
             "text": b.text}
            for i, b in enumerate(self.beams)
        ]  # fmt: skip


def _search_config(lm: LoadedModel, params: SamplingParams, prompt_length: int, **search: Any) -> Any:
    """The GenerationConfig for a search: the kit's greedy translation (every field explicit), plus the search."""
    gc, _ = for_model(lm, params, prompt_length)
    gc.update(**search, output_scores=True, return_dict_in_generate=True)
    return gc


def beam_search(
    lm: LoadedModel,
    prompt: str,
    num_beams: int = 4,
    max_new_tokens: int = 20,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    num_return_sequences: int | None = None,
    no_repeat_ngram_size: int = 0,
    repetition_penalty: float = 1.0,
    chat: bool = True,
) -> BeamSearchResult:
    """Search ``num_beams`` beams with transformers' ``generate`` (``num_beams=1``: greedy decoding) and return
    ``num_return_sequences`` of them (all by default), best first.

    ``length_penalty``: the score divides the summed log-probability by length ** length_penalty, so above 0 longer
    sequences are favoured (the sum only falls as tokens are added), 0 compares sums. ``early_stopping``: True stops
    as soon as ``num_beams`` beams have finished, False (transformers' default) when no better one is likely,
    "never" when none can be. ``no_repeat_ngram_size``: no run of that many tokens may occur twice.
    """
    num_beams, max_new_tokens, length_penalty = search_settings(num_beams, max_new_tokens, length_penalty)
    count = num_beams if num_return_sequences is None else num_return_sequences
    count = _checks.integer("num_return_sequences", count, lo=1, hi=num_beams, note="at most num_beams")
    search = {
        "num_beams": num_beams,
        "num_return_sequences": count,
        "length_penalty": length_penalty,
        "early_stopping": _checks.choice("early_stopping", early_stopping, (True, False, "never")),
        "no_repeat_ngram_size": _checks.integer("no_repeat_ngram_size", no_repeat_ngram_size, lo=0),
    }
    params = SamplingParams(temperature=0, max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty)
    inputs, prompt_length = prepare_inputs(lm, prompt, params, chat=chat)
    params = fit_context(lm, params, prompt_length)
    rows = params.replace(n=num_beams)  # beam search holds num_beams rows, and every step's scores
    check_fits(lm, planned_bytes(lm, rows, prompt_length, fast=False),
               f"num_beams={num_beams} x max_new_tokens={params.max_new_tokens}", "lower num_beams or max_new_tokens")
    beam_only = ("length_penalty", "early_stopping") if num_beams == 1 else ()  # greedy: transformers would warn
    gc = _search_config(lm, params, prompt_length, **{k: v for k, v in search.items() if k not in beam_only})
    start = time.perf_counter()
    with torch.inference_mode(), warnings.catch_warnings(), gpu_share.out_of_memory(lm.device):
        warnings.simplefilter("ignore")  # transformers' notes about flags the kit sets on purpose
        out = lm.model.generate(**inputs, generation_config=gc)
    seconds = time.perf_counter() - start
    beams = tuple(
        _beam(lm, prompt, row[prompt_length:].tolist(), out, i, search["length_penalty"], chat)
        for i, row in enumerate(out.sequences.cpu())
    )
    return BeamSearchResult(prompt, num_beams, search["length_penalty"], search["early_stopping"],
                            search["no_repeat_ngram_size"], beams, seconds)  # fmt: skip


def _beam(lm: LoadedModel, prompt: str, ids: list[int], out: Any, row: int, length_penalty: float, chat: bool) -> Beam:
    """One returned row as a Beam: cut after its first stop token (rows are padded), scored under the model.
    Greedy search returns no sequence score; it gets the same formula, from the model's log-probabilities."""
    stops = set(lm.eos_token_ids)
    end = next((i + 1 for i, t in enumerate(ids) if t in stops), len(ids))
    ids = ids[:end]
    logprob = score_continuation(lm, prompt, ids, chat=chat, top=0).logprob
    scores = getattr(out, "sequences_scores", None)
    score = float(scores[row]) if scores is not None else logprob / len(ids) ** length_penalty
    finished = ids[-1] in stops
    return Beam(tuple(ids), lm.decode(ids, skip_special_tokens=True), logprob, score, finished)


@dataclasses.dataclass(frozen=True)
class BeamNode:
    """A node of the tree the returned beams form: a token at ``depth`` (0 = first generated token), its parent
    node's index (-1 for the first tokens), the ranks of the beams that pass through it and the summed
    log-probability of the path up to and including it."""

    depth: int
    token: str
    parent: int
    beams: tuple[int, ...]
    logprob: float


def beam_tree(lm: LoadedModel, result: BeamSearchResult) -> list[BeamNode]:
    """The returned beams merged where they share a beginning: a prefix tree, nodes in the order first met
    (beams best first), for drawing (``smolkit.plot_beam_tree``). Log-probabilities under the model's own
    distribution, from one forward pass per beam."""
    nodes: list[BeamNode] = []
    index: dict[tuple[int, ...], int] = {}
    for rank, beam in enumerate(result.beams):
        steps = score_continuation(lm, result.prompt, list(beam.token_ids), top=0).tokens
        total = 0.0
        for depth, step in enumerate(steps):
            total += step.logprob
            key = beam.token_ids[: depth + 1]
            if key in index:
                node = nodes[index[key]]
                nodes[index[key]] = dataclasses.replace(node, beams=(*node.beams, rank))
                continue
            parent = index.get(key[:-1], -1)
            index[key] = len(nodes)
            nodes.append(BeamNode(depth, step.token, parent, (rank,), total))
    return nodes


def beam_snippet(
    num_beams: int,
    target: str = "transformers",
    max_new_tokens: int = 20,
    length_penalty: float = 1.0,
    model: str = EMBEDDED_MODEL,
    prompt: str = "Write a haiku about tea.",
) -> str:
    """A few lines that run this beam search on ``target``: "transformers" (``generate(num_beams=...)``) or "vllm"
    (``LLM.beam_search`` with ``BeamSearchParams``, outside SamplingParams)."""
    num_beams, max_new_tokens, length_penalty = search_settings(num_beams, max_new_tokens, length_penalty)
    target = _checks.choice("target", target, ("transformers", "vllm"))
    model, prompt = model_name(model), _checks.text("prompt", prompt)
    messages = source("prompt", [{"role": "user", "content": prompt}])
    if target == "vllm":
        return code([
            "from vllm import LLM",
            "from vllm.sampling_params import BeamSearchParams",
            "",
            *vllm_llm_lines(model),
            "# vLLM scores a beam as log-probability / length ** length_penalty, its length counting",
            "# prompt + generated tokens (a final end-of-text token not counted); transformers counts the",
            "# generated tokens alone (end-of-text included): the same length_penalty can rank beams differently",
            f"params = BeamSearchParams(beam_width={source('num_beams', num_beams)}, "
            f"max_tokens={source('max_new_tokens', max_new_tokens)}, "
            f"length_penalty={source('length_penalty', length_penalty)})",
            "prompt = llm.get_tokenizer().apply_chat_template(",
            f"    {messages}, add_generation_prompt=True, tokenize=False",
            ")",
            'outputs = llm.beam_search([{"prompt": prompt}], params)',
            "for beam in outputs[0].sequences:",
            "    print(beam.cum_logprob, repr(beam.text))",
        ])  # fmt: skip
    return code([
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        *_transformers_load(model, prompt, vision=False),
        "out = model.generate(",
        f"    **inputs, do_sample=False, num_beams={num_beams}, num_return_sequences={num_beams},",
        f"    max_new_tokens={max_new_tokens}, length_penalty={source('length_penalty', length_penalty)},",
        "    output_scores=True, return_dict_in_generate=True,",
        ")",
        "prompt_length = inputs['input_ids'].shape[1]",
        "for row, score in zip(out.sequences, out.sequences_scores):",
        "    print(float(score), repr(tokenizer.decode(row[prompt_length:], skip_special_tokens=True)))",
    ])  # fmt: skip
