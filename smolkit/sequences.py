"""Whole sequences: how likely a continuation is, token by token; perplexity; the long tail; server logprobs.

The next-token distribution (``smolkit.distribution``) is one step. A text is many: its probability under the
model is the product of the probabilities of its tokens, each given the ones before, so its log-probability is a
sum. One forward pass over prompt + continuation gives every step's logits at once (the same numbers generate sees
with its cache, up to float rounding).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

from smolkit import _checks, gpu_share
from smolkit.distribution import Distribution, TokenProb, prepare_inputs
from smolkit.generation import SCORE_BYTES_PER_LOGIT, GenerationResult, check_fits, forward_bytes, generate
from smolkit.models import LoadedModel
from smolkit.params import SamplingParams

__all__ = [
    "HUMAN_TEXT",
    "LOGPROBS_MODES",
    "MAX_TOP_LOGPROBS",
    "ContinuationScore",
    "TokenScore",
    "continuation_inputs",
    "continuation_logits",
    "logprob_rows",
    "perplexity_rows",
    "score_continuation",
    "server_logprobs",
    "tail_chance",
    "tail_rows",
]

HUMAN_TEXT = {
    "prompt": "Write a short story about a dragon.",
    "text": (
        "The dragon of Kell Hill was old, and she had stopped counting her gold years ago. Every morning she flew "
        "down to the river, drank until the water ran low, and listened to the children on the bridge argue about "
        "whether she was real. One spring a girl threw her a pear. The dragon ate it, core and all, and came back "
        "the next day for another."
    ),
}
"""A short story written for the kit, never sampled from SmolLM2: the yardstick its own samples are held against."""

LOGPROBS_MODES = ("raw", "processed")
"""What a server's logprobs are computed from. "raw": the model's own distribution, before penalties, temperature
and cut-offs (vLLM's default, ``--logprobs-mode raw_logprobs``; the kit's stage "raw"). "processed": the
distribution the token was drawn from (vLLM's ``processed_logprobs``; the kit's ``Distribution.probs``)."""

MAX_TOP_LOGPROBS = 20
"""The OpenAI API accepts top_logprobs from 0 to 20; vLLM's server caps it at its ``max_logprobs`` (20 by default)."""


@dataclasses.dataclass(frozen=True)
class TokenScore:
    """One token of a continuation: its log-probability given everything before it (natural log), its rank among
    the model's choices at that step (0 = the first choice), and the model's top choices there."""

    index: int
    token_id: int
    token: str
    logprob: float
    rank: int
    top: tuple[TokenProb, ...]

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)


@dataclasses.dataclass(frozen=True)
class ContinuationScore:
    """How likely the model finds ``tokens`` after ``prompt``, under its own distribution (temperature 1, nothing
    cut): ``logprob`` is the sum over tokens, ``perplexity`` exp(-mean log-probability), the number of equally
    likely tokens the model was choosing among, on average, at each step."""

    prompt: str
    tokens: tuple[TokenScore, ...]

    @property
    def logprob(self) -> float:
        return math.fsum(t.logprob for t in self.tokens)

    @property
    def mean_logprob(self) -> float:
        return self.logprob / len(self.tokens) if self.tokens else 0.0

    @property
    def perplexity(self) -> float:
        return math.exp(-self.mean_logprob)

    def __len__(self) -> int:
        return len(self.tokens)

    def rows(self, n: int | None = None) -> list[dict[str, Any]]:
        """One row per token (the first ``n``): its text, probability, log-probability, rank and the running sum
        of log-probabilities. Print with ``smolkit.format_rows``."""
        rows, total = [], 0.0
        for t in self.tokens[:n]:
            total += t.logprob
            rows.append({"token": t.token, "prob": t.prob, "logprob": t.logprob, "rank": t.rank, "sum": total})
        return rows

    def summary(self) -> str:
        return (
            f"{len(self)} tokens, log-probability {self.logprob:.2f} (probability {math.exp(self.logprob):.1e}), "
            f"{self.mean_logprob:.2f} per token, perplexity {self.perplexity:.2f}"
        )


def continuation_inputs(
    lm: LoadedModel, prompt: str, continuation: str | Sequence[int], chat: bool = True, name: str = "continuation"
) -> tuple[dict[str, torch.Tensor], int]:
    """The model inputs for ``prompt`` + ``continuation`` (named ``name`` in errors) and the prompt's length,
    checked before any model work: not empty, within the context, and the scoring within the memory rule."""
    inputs, prompt_length = prepare_inputs(lm, prompt, SamplingParams(), continuation, chat=chat, name=name)
    positions = int(inputs["input_ids"].shape[1])
    scored = positions - prompt_length
    if not scored:
        raise ValueError(f"{name} is empty: give the text (or token ids) that follows the prompt")
    check_fits(lm, forward_bytes(lm, positions, scored), f"scoring {scored} tokens of {name}",
               f"score a shorter {name} (about {SCORE_BYTES_PER_LOGIT * lm.vocab_size / 2**20:.1f} MiB a token)")
    return inputs, prompt_length


def continuation_logits(
    lm: LoadedModel, prompt: str, continuation: str | Sequence[int], chat: bool = True, name: str = "continuation"
) -> tuple[list[int], torch.Tensor, torch.Tensor, int]:
    """The continuation's token ids, the raw logits that predicted each of them (steps x vocab, float32, CPU),
    the whole input ids (prompt + continuation) and the prompt's length, from one forward pass.

    ``continuation`` is text (tokenized as ``generate``'s tokens are, without special tokens) or token ids;
    ``name`` is what the caller calls it (errors name it so).
    """
    inputs, prompt_length = continuation_inputs(lm, prompt, continuation, chat, name)
    ids = inputs["input_ids"][0, prompt_length:].tolist()
    with torch.inference_mode(), gpu_share.out_of_memory(lm.device):  # only the logits that predict the ids
        logits = lm.model(**inputs, use_cache=False, logits_to_keep=len(ids) + 1).logits[0, :-1]
    return ids, logits.float().cpu(), inputs["input_ids"].cpu(), prompt_length


def score_continuation(
    lm: LoadedModel, prompt: str, continuation: str | Sequence[int], chat: bool = True, top: int = 5
) -> ContinuationScore:
    """The log-probability of ``continuation`` after ``prompt``, token by token, under the model's own
    distribution (what ``generate`` would draw from at temperature 1 with nothing cut)."""
    return _score(lm, prompt, continuation, chat, top, "continuation")


def _score(
    lm: LoadedModel, prompt: str, continuation: str | Sequence[int], chat: bool, top: int, name: str
) -> ContinuationScore:
    top = _checks.integer("top", top, lo=0, hi=MAX_TOP_LOGPROBS)
    ids, logits, _, _ = continuation_logits(lm, prompt, continuation, chat, name)
    logp = torch.log_softmax(logits.double(), dim=-1)
    chosen = logp.gather(-1, torch.tensor(ids).view(-1, 1)).flatten()
    ranks = (logp > chosen.view(-1, 1)).sum(-1).tolist()
    best_lp, best_ids = torch.topk(logp, top, dim=-1)
    needed = list({*ids, *best_ids.flatten().tolist()})
    texts = dict(zip(needed, lm.token_texts(needed), strict=True))
    tokens = tuple(
        TokenScore(i, tid, texts[tid], float(chosen[i]), int(ranks[i]),
                   tuple(TokenProb(texts[b], b, math.exp(v)) for b, v in zip(best_ids[i].tolist(), best_lp[i].tolist(),
                                                                             strict=True)))
        for i, tid in enumerate(ids)
    )  # fmt: skip
    return ContinuationScore(prompt, tokens)


def _without_stop(lm: LoadedModel, ids: Sequence[int], params: SamplingParams) -> list[int]:
    """A sample's ids without the stop token it ended with (the text the model wrote, for perplexity)."""
    stops = {*lm.eos_token_ids, *params.stop_token_ids}
    return list(ids[:-1]) if ids and ids[-1] in stops else list(ids)


def perplexity_rows(
    lm: LoadedModel,
    prompt: str,
    temperatures: Sequence[float],
    reference: str | None = None,
    n: int = 4,
    max_new_tokens: int = 48,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Perplexity, under the model's own distribution, of its samples at each temperature (0 = greedy) and of a
    ``reference`` text: one row per source with the tokens scored and the perplexity of them all together
    (exp of minus their mean log-probability). A stop token that ends a sample is not scored."""
    plans = [SamplingParams(temperature=t, max_new_tokens=max_new_tokens, n=n, seed=seed) for t in temperatures]
    plans = [p.replace(n=1) if p.temperature == 0 else p for p in plans]  # greedy: one text, every sample the same
    if reference is not None:  # checked before any sample is generated
        continuation_inputs(lm, prompt, reference, name="reference")
    rows = []
    for params in plans:
        result = generate(lm, prompt, params)
        scores = [score_continuation(lm, prompt, _without_stop(lm, s.token_ids, params), top=0) for s in result.samples]
        rows.append(_perplexity_row(f"samples at temperature {params.temperature:g}", scores))
    if reference is not None:
        rows.append(_perplexity_row("the reference text", [_score(lm, prompt, reference, True, 0, "reference")]))
    return rows


def _perplexity_row(source: str, scores: Sequence[ContinuationScore]) -> dict[str, Any]:
    tokens = sum(len(s) for s in scores)
    total = math.fsum(s.logprob for s in scores)
    return {"text": source, "tokens": tokens, "logprob/token": total / tokens, "perplexity": math.exp(-total / tokens)}


def tail_rows(
    dist: Distribution, thresholds: Sequence[float] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6), stage: str = "final"
) -> list[dict[str, Any]]:
    """The long tail of one next-token distribution: for each threshold, how many tokens have a probability below
    it and how much probability they hold together (the chance that one draw lands there)."""
    probs = dist.stage(stage).double()
    rows = []
    for threshold in thresholds:
        threshold = _checks.number("threshold", threshold, lo=0, hi=1, open_lo=True)
        below = (probs > 0) & (probs < threshold)
        rows.append({"below": threshold, "tokens": int(below.sum()), "their mass": float(probs[below].sum())})
    return rows


def tail_chance(
    lm: LoadedModel, prompt: str, token_ids: Sequence[int], threshold: float = 1e-6, chat: bool = True
) -> dict[str, Any]:
    """Along a continuation sampled at temperature 1 with nothing cut: at each step the probability mass of the
    tokens below ``threshold``, and the chance that a sample of that many steps draws at least one of them,
    1 - prod(1 - mass): rare tokens are individually negligible and together hard to avoid."""
    threshold = _checks.number("threshold", threshold, lo=0, hi=1, open_lo=True)
    ids, logits, _, _ = continuation_logits(lm, prompt, token_ids, chat, "token_ids")
    probs = torch.softmax(logits.double(), dim=-1)
    mass = torch.where(probs < threshold, probs, torch.zeros((), dtype=probs.dtype)).sum(-1)
    drawn = probs.gather(-1, torch.tensor(ids).view(-1, 1)).flatten()
    return {
        "steps": len(ids),
        "mean mass below": float(mass.mean()),
        "chance of at least one": float(1 - torch.prod(1 - mass)),
        "drawn below": int((drawn < threshold).sum()),
    }


def server_logprobs(
    lm: LoadedModel,
    result: GenerationResult,
    top_logprobs: int = 5,
    mode: str = "raw",
    sample: int = 0,
    chat: bool = True,
    digits: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The ``logprobs`` an OpenAI-style (vLLM) chat server returns for sample ``sample`` of ``result``, in its
    format: ``{"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}, ...]}`` (servers
    also send each token's UTF-8 bytes, left out here). ``mode`` (LOGPROBS_MODES) says which distribution they are
    computed from: "raw" the model's own (vLLM's default), "processed" the one the token was drawn from.
    ``digits`` rounds the log-probabilities for display (servers send full floats)."""
    mode = _checks.choice("mode", mode, LOGPROBS_MODES)
    places = None if digits is None else _checks.integer("digits", digits, lo=0)
    keep = (lambda v: v) if places is None else (lambda v: round(v, places))
    top_logprobs = _checks.integer("top_logprobs", top_logprobs, lo=0, hi=MAX_TOP_LOGPROBS)
    sample = _checks.integer("sample", sample, lo=0, hi=len(result.samples) - 1)
    ids, logits, input_ids, prompt_length = continuation_logits(lm, result.prompt, result.samples[sample].token_ids,
                                                                chat)  # fmt: skip
    content = []
    for step, (token_id, row) in enumerate(zip(ids, logits, strict=True)):
        if mode == "raw":
            logp = torch.log_softmax(row.double(), dim=-1)
        else:
            context = input_ids[:, : prompt_length + step]
            logp = Distribution.from_logits(lm, result.params, row, context, prompt_length).probs.double().log()
        values, best = torch.topk(logp, top_logprobs)
        content.append({
            "token": lm.token_text(token_id),
            "logprob": keep(float(logp[token_id])),
            "top_logprobs": [{"token": lm.token_text(int(i)), "logprob": keep(float(v))}
                             for v, i in zip(values, best, strict=True) if v > -math.inf],
        })  # fmt: skip
    return {"content": content}


def logprob_rows(lm: LoadedModel, result: GenerationResult, n: int = 8, chat: bool = True) -> list[dict[str, Any]]:
    """The first ``n`` tokens of ``result``'s first sample, with what a server returns beside what the kit shows:
    the "raw" logprob (vLLM's default) and its probability, which is ``next_token_distribution(...).stage("raw")``,
    and the "processed" logprob, which is the kit's ``Step.prob`` (the distribution the token was drawn from)."""
    raw = server_logprobs(lm, result, top_logprobs=0, mode="raw", chat=chat)["content"]
    processed = server_logprobs(lm, result, top_logprobs=0, mode="processed", chat=chat)["content"]
    return [
        {"token": r["token"], "raw logprob": r["logprob"], "raw prob": math.exp(r["logprob"]),
         "processed logprob": p["logprob"], "Step.prob": step.prob}
        for r, p, step in list(zip(raw, processed, result.steps, strict=True))[:n]
    ]  # fmt: skip
