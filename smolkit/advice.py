"""The source README's advice, measured: factual recipes on questions with known answers, and "temperature OR
top_p, not both" at matched entropy.

The advice (``README_ADVICE``, as written) gives ranges and a rule of thumb. Here each recipe answers the kit's own
factual questions (``FACTUAL_QUESTIONS``, short known answers) many times: accuracy is the share of answers that
contain an accepted answer, and the distinct-answer rate the share of repeated samples that brought an answer not given
before for that question (0: always the same answer). For the creative side, settings that use temperature alone,
top_p alone, or both are first tuned to the same mean entropy (the same amount of freedom, in bits) on the same
next-token distributions, then write many texts each: diversity (distinct 3-grams across a prompt's samples),
the off-topic rate (samples that never mention the prompt's subject) and the share of tokens outside the model's
top 5 (where incoherent text comes from) say which way of spending that freedom works better.

Every number keeps its records: per question, how many of a recipe's answers were right and how many brought a new
answer (a greedy recipe answers once per question: its answer is the same every time); per creative prompt, how many
texts drifted off topic. The statistics resample those records, not the single answers: answers to one question
share its difficulty, and texts for one prompt share its subject, so they are not independent draws. Intervals are
95 % percentile bootstrap intervals over questions (or prompts), resampled whole (a cluster bootstrap); two recipes
are compared question by question (a paired bootstrap of the difference), which removes what they share (an easy
question is easy for both). Where the paired interval holds 0, the questions cannot tell the two apart. With 42
questions and 8 prompts the intervals are wide: they say what this question set can separate, no more.

This module holds what the notebooks read and rerun: the questions, recipes and prompts, ``measure_factual`` (notebook
09 reruns it on a few questions), the statistics and the recommendation. The full measurement, which takes tens of
minutes on a CPU, is a benchmark: ``python bench/measure_advice.py --overwrite`` writes the committed results file
(``smolkit/data/advice.json``, read by ``load_advice``) with the command, the machine and the versions in it.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from smolkit import _checks
from smolkit.generation import generate
from smolkit.models import LoadedModel
from smolkit.params import SamplingParams

__all__ = [
    "CREATIVE_PROMPTS",
    "FACTUAL_QUESTIONS",
    "FACTUAL_RECIPES",
    "README_ADVICE",
    "RESULTS_PATH",
    "CreativePrompt",
    "Question",
    "advice_rows",
    "bootstrap_interval",
    "is_correct",
    "load_advice",
    "measure_factual",
    "on_topic",
    "paired_difference",
    "recommended",
    "summarise_creative",
    "summarise_factual",
]

RESULTS_PATH = Path(__file__).resolve().parent / "data" / "advice.json"

README_ADVICE = {
    "temperature": "Low temperature (0.1-0.3): more focused, factual, and deterministic responses. Medium "
    "temperature (0.5-0.7): balanced between predictability and creativity. High temperature (0.8-1.5): more "
    "creative, diverse, and sometimes unexpected outputs.",
    "top_p": "Low top_p (0.1-0.3): more deterministic and focused output. Medium top_p (0.5-0.7): moderate "
    "diversity. High top_p (0.8-0.9): more creative and varied responses.",
    "one knob": "It's generally recommended to adjust either temperature OR top_p, but not both simultaneously, "
    "to avoid conflicting behaviors.",
    "factual": "For factual, consistent outputs (like image descriptions): use lower temperature (0.1-0.3), use "
    "lower top_p (0.1-0.5), higher repetition_penalty (1.1-1.5).",
    "creative": "For creative outputs: use higher temperature (0.7-1.0), use higher top_p (0.8-0.95), moderate "
    "repetition_penalty.",
}
"""The source README's advice on temperature, top_p and its "Best Practices", word for word."""


@dataclasses.dataclass(frozen=True)
class Question:
    """A factual question with short accepted answers (any of them, as whole words, counts as correct)."""

    id: str
    text: str
    answers: tuple[str, ...]


def _q(key: str, text: str, *answers: str) -> Question:
    return Question(key, text, answers)


FACTUAL_QUESTIONS: tuple[Question, ...] = (
    _q("capital-france", "What is the capital of France?", "paris"),
    _q("capital-japan", "What is the capital of Japan?", "tokyo"),
    _q("capital-italy", "What is the capital of Italy?", "rome"),
    _q("capital-spain", "What is the capital of Spain?", "madrid"),
    _q("capital-germany", "What is the capital of Germany?", "berlin"),
    _q("capital-egypt", "What is the capital of Egypt?", "cairo"),
    _q("capital-canada", "What is the capital of Canada?", "ottawa"),
    _q("capital-australia", "What is the capital of Australia?", "canberra"),
    _q("spider-legs", "How many legs does a spider have?", "8", "eight"),
    _q("week-days", "How many days are there in a week?", "7", "seven"),
    _q("year-months", "How many months are there in a year?", "12", "twelve"),
    _q("hour-minutes", "How many minutes are there in an hour?", "60", "sixty"),
    _q("triangle-sides", "How many sides does a triangle have?", "3", "three"),
    _q("hexagon-sides", "How many sides does a hexagon have?", "6", "six"),
    _q("seven-times-eight", "What is 7 times 8?", "56", "fifty-six", "fifty six"),
    _q("nine-plus-five", "What is 9 plus 5?", "14", "fourteen"),
    _q("water-boils", "At how many degrees Celsius does water boil at sea level?", "100", "one hundred"),
    _q("water-freezes", "At how many degrees Celsius does water freeze?", "0", "zero"),
    _q("gold-symbol", "What is the chemical symbol for gold?", "au"),
    _q("water-formula", "What is the chemical formula of water?", "h2o", "h₂o"),
    _q("largest-planet", "What is the largest planet in the solar system?", "jupiter"),
    _q("red-planet", "Which planet is known as the Red Planet?", "mars"),
    _q("sun-name", "What is the star at the centre of our solar system called?", "sun"),
    _q("earth-satellite", "What is the name of Earth's natural satellite?", "moon"),
    _q("romeo-author", "Who wrote Romeo and Juliet?", "shakespeare"),
    _q("mona-lisa", "Who painted the Mona Lisa?", "leonardo", "da vinci"),
    _q("relativity", "Which scientist developed the theory of relativity?", "einstein"),
    _q("gravity-apple", "Which scientist is famous for a falling apple and the law of gravity?", "newton"),
    _q("largest-ocean", "What is the largest ocean on Earth?", "pacific"),
    _q("cairo-river", "Which river flows through Cairo?", "nile"),
    _q("tallest-mountain", "What is the tallest mountain on Earth?", "everest"),
    _q("biggest-desert", "Which hot desert covers much of North Africa?", "sahara"),
    _q("sky-colour", "What colour is a clear sky during the day?", "blue"),
    _q("grass-colour", "What colour is fresh grass?", "green"),
    _q("banana-colour", "What colour is a ripe banana?", "yellow"),
    _q("bees-make", "What sweet food do bees make?", "honey"),
    _q("cow-drink", "What white drink do cows give?", "milk"),
    _q("plants-gas", "Which gas do plants take in from the air to make their food?", "carbon dioxide", "co2"),
    _q("breathe-gas", "Which gas do humans need to breathe to live?", "oxygen"),
    _q("frozen-water", "What is frozen water called?", "ice"),
    _q("fastest-land-animal", "What is the fastest land animal?", "cheetah"),
    _q("largest-animal", "What is the largest animal on Earth?", "blue whale", "whale"),
)
"""The kit's own factual questions: common knowledge, one short answer each, the answer never in the question."""

QUESTION_SUFFIX = " Answer in one short sentence."
"""Appended to every question: short answers keep the measurement about the answer, not the essay after it."""

FACTUAL_RECIPES: dict[str, SamplingParams] = {
    "greedy": SamplingParams(temperature=0),
    "README factual (T 0.2, top_p 0.3, repetition_penalty 1.3)": SamplingParams(
        temperature=0.2, top_p=0.3, repetition_penalty=1.3
    ),
    "README factual, mild (T 0.1, top_p 0.5, repetition_penalty 1.1)": SamplingParams(
        temperature=0.1, top_p=0.5, repetition_penalty=1.1
    ),
    "README factual, strong (T 0.3, top_p 0.1, repetition_penalty 1.5)": SamplingParams(
        temperature=0.3, top_p=0.1, repetition_penalty=1.5
    ),
    "T 0.2, top_p 0.3": SamplingParams(temperature=0.2, top_p=0.3),
    "T 0.2": SamplingParams(temperature=0.2),
    "top_p 0.3": SamplingParams(top_p=0.3),
    "T 0.7, top_p 0.9": SamplingParams(temperature=0.7, top_p=0.9),
    "T 1 (the model as trained)": SamplingParams(),
}
"""The recipes measured on FACTUAL_QUESTIONS: the source README's factual recipe at the middle and both ends of its
ranges, the same without repetition_penalty, each knob alone, greedy, and everyday and untouched sampling."""


@dataclasses.dataclass(frozen=True)
class CreativePrompt:
    """A creative request and the words (stems) that show a sample stayed on its subject."""

    id: str
    text: str
    topic: tuple[str, ...]


CREATIVE_PROMPTS: tuple[CreativePrompt, ...] = (
    CreativePrompt("dragon", "Write a short story about a dragon.", ("dragon",)),
    CreativePrompt("sea", "Write a poem about the sea.", ("sea", "ocean", "wave", "tide", "shore")),
    CreativePrompt("robot", "Write a story about a robot who learns to paint.", ("robot", "paint")),
    CreativePrompt("market", "Describe a busy market in a city.", ("market", "stall", "vendor")),
    CreativePrompt("forest", "Describe a walk in a forest in autumn.", ("forest", "tree", "leaves", "leaf", "wood")),
    CreativePrompt("soup", "Invent a recipe for a soup.", ("soup", "broth")),
    CreativePrompt("cat", "Tell a story about a cat who finds a key.", ("cat", "key")),
    CreativePrompt("mountain", "Write a letter to a friend about a trip to the mountains.", ("mountain", "peak")),
)
"""The kit's own creative requests, each with its subject's words."""

CREATIVE_REFERENCE = SamplingParams(temperature=0.85, top_p=0.9)
"""The source README's creative recipe at the middle of its ranges (temperature 0.7-1.0, top_p 0.8-0.95); its
mean entropy is the target every other creative setting is tuned to."""

CREATIVE_TEMPERATURES = (1.2, 1.5)
"""Temperatures at which a setting with both knobs gets its top_p tuned to the target entropy."""

SETTINGS = {"max_new_tokens": 16, "samples": 10, "creative_tokens": 48, "creative_samples": 16, "calibration": 32,
            "seed": 0}  # fmt: skip
"""The full measurement's sizes: factual answers' tokens and samples per question and recipe (one where the recipe
cannot vary: ``_answers``), creative texts' tokens and samples per prompt and setting, and the tokens of each
prompt's calibration text. The question (or prompt) is the unit the intervals resample, so more samples per
question narrow them little: 10 answers per question and 16 texts per prompt (20 and 32 before, when the run took
42 min on an idle 2-core CPU), and one answer wherever a recipe cannot vary, leave far fewer texts to generate (the
new run's time is in the results file, ``seconds``)."""

BOOTSTRAP = {"resamples": 4000, "level": 0.95, "seed": 0}
"""The bootstrap's resamples, confidence level and seed (fixed, so the committed intervals can be recomputed)."""


def bootstrap_interval(
    clusters: Sequence[Any],
    statistic: Callable[[Sequence[Any]], float],
    resamples: int = BOOTSTRAP["resamples"],
    level: float = BOOTSTRAP["level"],
    seed: int = BOOTSTRAP["seed"],
) -> tuple[float, float]:
    """The percentile bootstrap interval of ``statistic`` over ``clusters`` (questions or prompts), each resampled
    whole with replacement: a cluster bootstrap, so what one cluster's answers share (its difficulty, its subject)
    widens the interval as it should.

    Hand-written with the standard library (``random.Random(seed).choices``): scipy.stats.bootstrap does the same,
    but scipy is not one of the kit's dependencies, and these few lines are all that is needed.

    >>> bootstrap_interval([1.0] * 5, lambda xs: sum(xs) / len(xs))
    (1.0, 1.0)
    >>> lo, hi = bootstrap_interval([0, 1] * 21, lambda xs: sum(xs) / len(xs))
    >>> 0.3 < lo < 0.5 < hi < 0.7
    True
    """
    rng = random.Random(seed)
    stats = sorted(statistic(rng.choices(clusters, k=len(clusters))) for _ in range(resamples))
    tail = (1 - level) / 2
    return stats[int(tail * resamples)], stats[min(int((1 - tail) * resamples), resamples - 1)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """The mean of ``a - b`` over paired clusters (the same questions, or prompts, in the same order) and its
    bootstrap interval (``bootstrap_interval`` over the pairs: a paired bootstrap). An interval that holds 0 means
    these clusters cannot tell the two apart.

    >>> paired_difference([1, 1, 0, 1], [1, 0, 0, 1])[0]
    0.25
    >>> paired_difference([1, 0] * 10, [1, 0] * 10)
    (0.0, (0.0, 0.0))
    """
    pairs = list(zip(a, b, strict=True))

    def difference(sample: Sequence[tuple[float, float]]) -> float:
        return _mean([x - y for x, y in sample])

    return difference(pairs), bootstrap_interval(pairs, difference)


def separated(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when the paired interval of ``a - b`` leaves 0 out: the clusters tell the two apart."""
    lo, hi = paired_difference(a, b)[1]
    return lo > 0 or hi < 0


def _normalise(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: what answers are compared in.

    >>> _normalise("The capital of France is Paris!")
    'the capital of france is paris'
    """
    return " ".join(re.sub(r"[^\w₂]+", " ", text.lower()).split())


def is_correct(text: str, question: Question) -> bool:
    """True when ``text`` contains one of the question's accepted answers as whole words.

    >>> spider = FACTUAL_QUESTIONS[8]
    >>> is_correct("A spider has 8 legs.", spider), is_correct("Spiders have 18 legs.", spider)
    (True, False)
    """
    words = f" {_normalise(text)} "
    return any(f" {_normalise(answer)} " in words for answer in question.answers)


def on_topic(text: str, prompt: CreativePrompt) -> bool:
    """True when some word of ``text`` starts with one of the prompt's subject words (a creative text that never
    does drifted off topic).

    >>> sea = CREATIVE_PROMPTS[1]
    >>> on_topic("Waves break on the shore.", sea), on_topic("A dragon slept.", sea)
    (True, False)
    """
    words = _normalise(text).split()
    return any(word.startswith(stem) for word in words for stem in prompt.topic)


def answer_key(text: str, question: Question) -> str:
    """What counts as the same answer: the accepted answer when ``text`` is correct (however it is phrased),
    else the text itself, normalised."""
    return question.answers[0] if is_correct(text, question) else _normalise(text)


def _new_answers(keys: Sequence[str]) -> int:
    """How many samples after the first gave an answer not seen before (distinct answers - 1)."""
    return max(len(set(keys)) - 1, 0)


def question_scores(row: Mapping[str, Any]) -> list[float]:
    """A factual row's accuracy on each question (the share of its answers that were right), in question order."""
    return [q["correct"] / q["samples"] for q in row["by_question"]]


def summarise_factual(recipe: str, params: SamplingParams, by_question: Sequence[Mapping[str, Any]]) -> dict:
    """A recipe's row from its per-question records (``id``, ``samples``, ``correct``, ``new_answers``): accuracy
    (the mean over questions of each question's share of right answers) and the distinct-answer rate (the mean over
    questions of the share of repeated answers that were new; 0 where the recipe answered once because it cannot
    vary), each with a bootstrap interval over questions."""

    def distinct(records: Sequence[Mapping[str, Any]]) -> float:
        return _mean([q["new_answers"] / (q["samples"] - 1) if q["samples"] > 1 else 0.0 for q in records])

    records = list(by_question)
    scores = question_scores({"by_question": records})
    return {"recipe": recipe, "params": params.to_dict(), "deterministic": all(q["samples"] == 1 for q in records),
            "samples_per_question": max(q["samples"] for q in records), "questions": len(records),
            "correct": sum(q["correct"] for q in records), "accuracy": _mean(scores),
            "accuracy_interval": bootstrap_interval(scores, _mean), "distinct_rate": distinct(records),
            "distinct_interval": bootstrap_interval(records, distinct), "by_question": records}  # fmt: skip


def _answers(lm: LoadedModel, question: Question, recipe: SamplingParams, samples: int) -> list[str]:
    """The recipe's answers to ``question``: one when it cannot vary there, else ``samples``. A greedy recipe
    cannot; a sampling one cannot when its first answer drew every token with probability 1 (its cut-offs left one
    token at every step, as top_p 0.3 after temperature 0.2 mostly does): every sample would then be that answer."""
    first = generate(lm, question.text + QUESTION_SUFFIX, recipe.replace(n=1))
    if recipe.greedy or all(step.prob == 1.0 for step in first.samples[0].steps):
        return first.texts
    return generate(lm, question.text + QUESTION_SUFFIX, recipe.replace(n=samples)).texts


def measure_factual(
    lm: LoadedModel,
    recipes: Mapping[str, SamplingParams] = FACTUAL_RECIPES,
    questions: Sequence[Question] = FACTUAL_QUESTIONS,
    samples: int = SETTINGS["samples"],
    max_new_tokens: int = SETTINGS["max_new_tokens"],
    seed: int = SETTINGS["seed"],
    progress: bool = False,
) -> list[dict[str, Any]]:
    """For each recipe, its answers to every question (seeded; ``samples`` of them, or one where the recipe cannot
    vary: ``_answers``), kept per question (``by_question``; a question answered once keeps the answer's text) and
    summarised by ``summarise_factual``."""
    samples = _checks.integer("samples", samples, lo=2, note="the distinct-answer rate needs repeated samples")
    rows = []
    for name, recipe in recipes.items():
        records = []
        for i, question in enumerate(questions):
            texts = _answers(lm, question, recipe.replace(max_new_tokens=max_new_tokens, seed=seed + i), samples)
            record = {"id": question.id, "samples": len(texts), "correct": sum(is_correct(t, question) for t in texts),
                      "new_answers": _new_answers([answer_key(t, question) for t in texts])}  # fmt: skip
            records.append({**record, "answer": texts[0]} if len(texts) == 1 else record)
        rows.append(summarise_factual(name, recipe, records))
        if progress:
            print(f"  {name}: accuracy {rows[-1]['accuracy']:.3f}, distinct {rows[-1]['distinct_rate']:.3f}",
                  file=sys.stderr)  # fmt: skip
    return rows


def prompt_scores(row: Mapping[str, Any]) -> list[float]:
    """A creative row's off-topic rate on each prompt, in prompt order."""
    return [p["off_topic"] / p["samples"] for p in row["by_prompt"]]


def summarise_creative(setting: str, params: SamplingParams, entropy: float,
                       by_prompt: Sequence[Mapping[str, Any]]) -> dict:  # fmt: skip
    """A creative setting's row from its per-prompt records (``id``, ``samples``, ``off_topic``, ``diversity``,
    ``tokens``, ``off_top5``): the off-topic rate with a bootstrap interval over prompts, diversity averaged over
    prompts, and the share of all its tokens outside the model's top 5."""
    records = list(by_prompt)
    scores = prompt_scores({"by_prompt": records})
    tokens = sum(p["tokens"] for p in records)
    return {"setting": setting, "params": params.to_dict(), "entropy": entropy,
            "samples": sum(p["samples"] for p in records), "samples_per_prompt": records[0]["samples"],
            "diversity": _mean([p["diversity"] for p in records]), "off_topic": sum(p["off_topic"] for p in records),
            "off_topic_rate": _mean(scores), "off_topic_interval": bootstrap_interval(scores, _mean),
            "off_top5": sum(p["off_top5"] * p["tokens"] for p in records) / max(tokens, 1),
            "by_prompt": records}  # fmt: skip


def _changed(params: Mapping[str, Any]) -> int:
    """How many sampling fields differ from the defaults (fewer knobs turned is simpler)."""
    defaults = SamplingParams().to_dict()
    return sum(params[k] != defaults[k] for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"))


def recommended(results: Mapping[str, Any]) -> dict[str, str]:
    """What the numbers recommend. factual: the highest accuracy; among the recipes the questions cannot separate
    from it (``separated``, paired by question), the fewest knobs turned, then the lowest distinct-answer rate.
    creative (all at the same entropy): the lowest off-topic rate; among the settings the prompts cannot separate
    from it (paired by prompt), the fewest tokens outside the model's top 5 (the most coherent way to spend the
    same freedom)."""
    factual = results["factual"]
    best = max(factual, key=lambda r: r["accuracy"])
    tied = [r for r in factual if not separated(question_scores(r), question_scores(best))]
    pick = min(tied, key=lambda r: (_changed(r["params"]), r["distinct_rate"], -r["accuracy"]))
    creative = results["creative"]
    safest = min(creative, key=lambda r: r["off_topic_rate"])
    close = [r for r in creative if not separated(prompt_scores(r), prompt_scores(safest))]
    return {"factual": pick["recipe"], "creative": min(close, key=lambda r: r["off_top5"])["setting"]}


def load_advice(path: str | Path = RESULTS_PATH) -> dict[str, Any]:
    """The committed measurement (``python bench/measure_advice.py`` writes it), as a dict; intervals as tuples."""
    data = json.loads(Path(path).read_text())
    for row in [*data["factual"], *data["creative"]]:
        for key in [k for k in row if k.endswith("_interval")]:
            row[key] = tuple(row[key])
    return data


def advice_rows(results: Mapping[str, Any], part: str = "factual") -> list[dict[str, Any]]:
    """The measured numbers as table rows (print with ``smolkit.format_rows``), each with its 95 % interval over
    questions (or prompts) and its difference from the best row, paired by question (or prompt), with that
    difference's interval (``vs best``, ``vs low``, ``vs high``) and whether that interval leaves 0 out
    (``separated``; False: the question set cannot tell the row from the best). "factual" gives the answers per
    question, accuracy and the distinct-answer rate; "creative" entropy, diversity, the off-topic rate and the share
    of tokens outside the top 5."""
    part = _checks.choice("part", part, ("factual", "creative"))
    factual = part == "factual"
    rows = results[part]
    scores = question_scores if factual else prompt_scores
    best = (max if factual else min)(rows, key=lambda r: r["accuracy" if factual else "off_topic_rate"])
    table = []
    for r in rows:
        difference, (lo, hi) = paired_difference(scores(r), scores(best))
        if factual:
            row = {"recipe": r["recipe"], "answers": r["samples_per_question"], "accuracy": r["accuracy"],
                   "low": r["accuracy_interval"][0], "high": r["accuracy_interval"][1]}  # fmt: skip
        else:
            row = {"setting": r["setting"], "entropy": r["entropy"], "diversity": r["diversity"],
                   "off-topic": r["off_topic_rate"], "low": r["off_topic_interval"][0],
                   "high": r["off_topic_interval"][1]}  # fmt: skip
        row.update({"vs best": difference, "vs low": lo, "vs high": hi, "separated": lo > 0 or hi < 0})
        row.update({"distinct": r["distinct_rate"]} if factual else {"off top-5": r["off_top5"]})
        table.append(row)
    return table
