"""The notebooks' exercises: each one's check, computed by the kit from the notebook's own objects.

A notebook's exercise cell reads ``smolkit.check_exercise("03a", answer, dist=dist)``: the learner sees the
question and the objects it is about, not the computation that answers it (that lives here, in ``EXERCISES``).
The right answer is never stored: it is computed again from the objects on every check, so that a learner who
changed the notebook's prompt is checked against what their notebook shows. Goal exercises ("a temperature at
which the top token holds at least 90 %") have many right answers: their ``accepts`` tries the learner's choice on
the learner's own objects.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from smolkit import _checks
from smolkit.beams import MAX_BEAMS, beam_search
from smolkit.distribution import next_token_distribution
from smolkit.engines import in_engine
from smolkit.explain import explain
from smolkit.generation import generate
from smolkit.params import SamplingParams
from smolkit.tables import penalty_rows, sweep
from smolkit.textstats import repeated_ngram_fraction
from smolkit.tokens import count_tokens

__all__ = ["EXERCISES", "Exercise", "check_exercise"]


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One exercise: the objects its check needs (keyword names), the computation of the right answer from them,
    the hint shown for a wrong answer, and the tolerance for numbers (absolute). A goal exercise gives
    ``accepts(answer, **objects)`` instead of ``answer``: whether the learner's choice reaches the goal."""

    needs: tuple[str, ...]
    answer: Callable[..., Any] | None
    hint: str
    tolerance: float = 0.0
    accepts: Callable[..., bool] | None = None


def _first_where(values: Sequence[Any], condition: Callable[[Any], bool]) -> Any:
    """The first of ``values`` meeting ``condition``, or None when none does (then no answer is right)."""
    return next((v for v in values if condition(v)), None)


def _needed(values: Any, condition: Callable[[Any], bool], missing: str) -> Any:
    """The first of ``values`` meeting ``condition``; a ValueError saying what is ``missing`` when none does (the
    learner's objects are not the notebook's: a bare StopIteration would say nothing)."""
    found = next((v for v in values if condition(v)), None)
    if found is None:
        raise ValueError(f"{missing}: run the notebook's cells that make it again, then this one")
    return found


def _top_token(dist: Any) -> str:
    return dist.top(1)[0].token


def _steps(start: float, step: float, count: int) -> list[float]:
    return [round(start + step * i, 2) for i in range(count)]


def _row_for(rows: Sequence[dict[str, Any]], edge: int) -> dict[str, Any]:
    return _needed(rows, lambda r: isinstance(r, dict) and r.get("longest edge") == edge,
                   f"rows has no row with 'longest edge' {edge}")  # fmt: skip


def _vllm_count(dist: Any) -> int:
    return dist.in_vllm_order().surviving()


def _keeps_more(dist: Any, first: str = "transformers", second: str = "llama.cpp") -> str:
    """Which of two engines can draw more tokens for ``dist`` ("same" when they keep as many)."""
    a, b = in_engine(dist, first).surviving(), in_engine(dist, second).surviving()
    return "same" if a == b else first if a > b else second
def _number(answer: Any, lo: float, hi: float) -> bool:
    """True for a number (not a bool) in [lo, hi]: a goal's answer must be a value the setting takes."""
    return isinstance(answer, (int, float)) and not isinstance(answer, bool) and lo <= answer <= hi


def _last_alone(answer: Any, sure: Any) -> bool:
    """04b: ``answer`` keeps the top token alone and ``answer + 0.01`` does not (the largest such two-decimal
    top_p), checked by applying both."""
    if not _number(answer, 0.01, 1.0) or sure.with_params(top_p=answer).surviving() != 1:
        return False
    return answer >= 1.0 or sure.with_params(top_p=min(round(answer + 0.01, 2), 1.0)).surviving() > 1


def _sharp_enough(answer: Any, dist: Any) -> bool:
    """03c: at temperature ``answer`` the top token holds at least 90 %."""
    return _number(answer, 0.01, 2.0) and dist.with_params(temperature=answer).top(1)[0].prob >= 0.9


def _three_kept(answer: Any, dist: Any) -> bool:
    """04c: top_p ``answer`` keeps exactly three tokens."""
    return _number(answer, 0.01, 1.0) and dist.with_params(top_p=answer).surviving() == 3


def _fewest_beams(answer: Any, lm: Any, story: str, beams: Any) -> bool:
    """10c: ``answer`` beams find a beginning as likely as the best of ``beams``, and one beam fewer does not."""
    if isinstance(answer, bool) or not isinstance(answer, int) or not 1 <= answer <= MAX_BEAMS:
        return False
    tokens = max(len(b) for b in beams.beams)

    def finds(width: int) -> bool:
        found = beam_search(lm, story, num_beams=width, max_new_tokens=tokens, length_penalty=beams.length_penalty)
        return found.best.logprob >= beams.best.logprob - 1e-6

    return finds(answer) and (answer == 1 or not finds(answer - 1))


EXERCISES: dict[str, Exercise] = {
    "00a": Exercise(("dist",), _top_token, "the tallest blue bar; copy its label, and a '␣' is a space"),
    "01a": Exercise(("lm", "question"), lambda lm, question: count_tokens(lm, question, chat=True),
                    "count the tokens of show_tokens(lm, question, chat=True)"),
    "01b": Exercise(("lm", "prompt", "greedy"),
                    lambda lm, prompt, greedy: generate(lm, prompt, greedy.replace(max_new_tokens=25))
                    .samples[0].finish_reason,
                    "the end-of-answer token is a token too: is it the 25th?"),
    "02a": Exercise(("lm", "prompt", "greedy"),
                    lambda lm, prompt, greedy: len(set(generate(lm, prompt, greedy.replace(n=10)).texts)),
                    "greedy has no randomness: what changes from one run to the next?"),
    "02b": Exercise(("lm", "prompt"), lambda lm, prompt: _top_token(next_token_distribution(lm, prompt,
                                                                                            generated="Once")),
                    "after clicking Once, the first button is the most likely token; a '␣' is a space"),
    "03a": Exercise(("dist",), lambda dist: dist.with_params(temperature=0.5).top(1)[0].prob,
                    "set the slider to 0.50 and read the first number after 'top:'", tolerance=0.01),
    "03b": Exercise(("dist",), lambda dist: len({r["top"] for r in sweep(dist, "temperature",
                                                                         [0.1, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0])}) > 1,
                    "look at the 'top' column of the table in section 4, or at the formula in section 1"),
    "03c": Exercise(("dist",), None, "lower temperatures sharpen: try a few with dist.with_params(temperature=...)"
                    " and read the top probability", accepts=_sharp_enough),
    "04a": Exercise(("dist",), lambda dist: dist.with_params(top_p=0.7).surviving(),
                    "set top_p to 0.70 and read '... tokens kept' above the picture"),
    "04b": Exercise(("sure",), None, "try your value and the next one up (0.01 more) with "
                    "sure.with_params(top_p=...).surviving()", accepts=_last_alone),
    "04c": Exercise(("dist",), None, "the table of section 3 brackets it; try values in between with "
                    "dist.with_params(top_p=...).surviving()", accepts=_three_kept),
    "05a": Exercise(("flat",), lambda flat: flat.with_params(top_k=20).kept_mass(),
                    "kept_mass is that share: try flat.with_params(top_k=...).kept_mass()", tolerance=0.01),
    "05b": Exercise(("flat",), lambda flat: _first_where(range(1, 1000), lambda k: flat.with_params(top_k=k)
                                                         .kept_mass() >= 0.8),
                    "kept_mass grows with k: narrow it down, e.g. try [10, 30, 50], then values in between"),
    "06a": Exercise(("dist",), lambda dist: _first_where(_steps(1.0, 0.05, 21), lambda r: _top_token(
                        dist.with_params(repetition_penalty=r)) != _top_token(dist)),
                    "watch the tallest blue bar; the table in section 3 brackets the answer", tolerance=0.001),
    "06b": Exercise(("poems",), lambda poems: max(poems, key=lambda p: repeated_ngram_fraction(poems[p].token_ids)),
                    "compare the repeated 3-grams of the poems"),
    "07a": Exercise(("dist",), lambda dist: 0.8 * _needed(penalty_rows(dist, n=8), lambda r: r["token"] == "A",
                                                          "dist has no token 'A' among its 8 most likely")["generated"],
                    "the penalty is charged once for each time the token was generated: how often was it?",
                    tolerance=0.001),
    "07b": Exercise(("dist",), lambda dist: _first_where(_steps(0.0, 0.1, 21), lambda f: _top_token(
                        dist.with_params(frequency_penalty=f)) != _top_token(dist)),
                    "how far ahead of the runner-up is A, and how many times is the penalty charged to it?",
                    tolerance=0.001),
    "08a": Exercise(("lm", "prompt", "params"),
                    lambda lm, prompt, params: len({generate(lm, prompt, params.replace(seed=7)).text
                                                    for _ in range(2)}) == 1,
                    "same seed, prompt, parameters, device and batch size"),
    "08b": Exercise(("lm", "question", "answer_params"),
                    lambda lm, question, answer_params: generate(lm, question, answer_params.replace(min_tokens=5))
                    .token_ids == generate(lm, question, answer_params).token_ids,
                    "min_tokens only matters when the model wants to stop before that many tokens"),
    "08c": Exercise(("lm",), lambda lm: lm.tokenizer("\n", add_special_tokens=False)["input_ids"][0],
                    "encode the text: lm.tokenizer.encode(..., add_special_tokens=False); convert_tokens_to_ids "
                    "looks up a token's spelling in the vocabulary, where a newline is not spelled '\\n'"),
    "09a": Exercise(("plain",), lambda plain: _vllm_count(plain.with_params(temperature=1.5, top_p=0.9, min_p=0.1)),
                    "replay the stages in vLLM's order (in_vllm_order) and count the tokens that survive"),
    "09b": Exercise(("plain", "temperatures"),
                    lambda plain, temperatures: _first_where(temperatures, lambda t: plain.with_params(
                        temperature=t, top_p=0.9).surviving() > 100),
                    "read the row top_p = 0.9 from left to right", tolerance=0.001),
    "10a": Exercise(("score",), lambda score: min(score.tokens, key=lambda t: t.logprob).token,
                    "the most negative number in the logprob column"),
    "10b": Exercise(("greedy", "beams"), lambda greedy, beams: greedy.best.logprob >= beams.best.logprob - 1e-6,
                    "section 3 prints the logprob of greedy's beginning and of every beam's"),
    "10c": Exercise(("lm", "story", "beams"), None, "beam_search(lm, story, num_beams=..., max_new_tokens=10, "
                    "length_penalty=0.0).best.logprob, for a few widths", accepts=_fewest_beams),
    "11a": Exercise(("rows",), lambda rows: _row_for(rows, 2048)["image tokens"],
                    "the image tokens column of the 2048 px row"),
    "11b": Exercise(("rows",), lambda rows: _row_for(rows, 1024)["tiles"],
                    "the tiles column of the 1024 px row"),
    "12a": Exercise(("client",), lambda client: _needed(client, lambda k: isinstance(client[k], dict) and
                                                        "repetition_penalty" in client[k],
                                                        "client has no part with repetition_penalty"),
                    "look at the client's keyword arguments in section 2: the part only vLLM reads"),
    "12b": Exercise(("lm",), lambda lm: next(s.values["top_k"] for s in explain(SamplingParams(temperature=1.0),
                                                                                lm).plain_stages if s.name == "top_k"),
                    "the note marked [top_k_default]"),
    "12c": Exercise(("exercise",), lambda exercise: _vllm_count(exercise),
                    "exercise.in_vllm_order() replays vLLM's order: count the tokens that can still be drawn"),
    "13a": Exercise(("exercise",), lambda exercise: _keeps_more(exercise),
                    "does top_p read the probabilities before the temperature (llama.cpp) or after (transformers)? "
                    "A temperature above 1 flattens them, so more tokens are needed to reach top_p"),
}
"""Every exercise of the notebooks, by notebook number and letter."""


def _matches(answer: Any, truth: Any, tolerance: float) -> bool:
    """Whether ``answer`` is ``truth``: numbers within ``tolerance`` (numpy and 0-d torch values as the Python
    numbers they hold), True and False only as themselves (True is not 1, 0 is not False), anything else equal."""
    answer, truth = _checks.plain(answer), _checks.plain(truth)
    if isinstance(answer, bool) or isinstance(truth, bool):
        return type(answer) is type(truth) and answer == truth
    numeric = (int, float)
    if isinstance(answer, numeric) and isinstance(truth, numeric):
        return math.isclose(answer, truth, rel_tol=0, abs_tol=tolerance)
    same = answer == truth
    return same if isinstance(same, bool) else False  # an array compared with a number is not an answer


def check_exercise(key: str, answer: Any, **objects: Any) -> bool:
    """Check ``answer`` to exercise ``key`` (e.g. "03a") against the kit's computation on the notebook's
    ``objects``; print "Correct!" or the exercise's hint, and return whether it was right.

    ``answer`` still ``None`` (or ``...``) means not answered yet: a reminder is printed, not a failure.

    >>> check_exercise("08c", None)
    Exercise: replace None with your answer, then run this cell again.
    False
    """
    exercise = EXERCISES[_checks.choice("exercise", key, tuple(EXERCISES))]
    if answer is None or answer is Ellipsis:
        print("Exercise: replace None with your answer, then run this cell again.")
        return False
    missing = [name for name in exercise.needs if name not in objects]
    if missing:
        raise TypeError(f"exercise {key} is checked on {', '.join(exercise.needs)}: pass {', '.join(missing)}=...")
    given = {name: objects[name] for name in exercise.needs}
    if exercise.accepts is not None:
        ok = bool(exercise.accepts(answer, **given))
    else:
        truth = exercise.answer(**given)
        ok = truth is not None and _matches(answer, truth, exercise.tolerance)
    print("Correct!" if ok else f"Not yet: {exercise.hint}")
    return ok
