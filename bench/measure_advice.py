"""Measure the source README's advice on the embedded model and write the results file the notebooks read
(``smolkit/data/advice.json``): the factual recipes on the kit's questions, then the creative settings tuned to one
mean entropy. Tens of minutes on a CPU (the time of the committed run is in the file, ``seconds``).

    python bench/measure_advice.py --overwrite       # re-measure the committed file
    python bench/measure_advice.py --out new.json    # a file of its own

What is measured and how it is summarised (questions, recipes, the bootstrap) lives in ``smolkit/advice.py``;
this script only runs it and records where: a benchmark, not part of the package the notebooks import.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from smolkit.advice import (
    BOOTSTRAP,
    CREATIVE_PROMPTS,
    CREATIVE_REFERENCE,
    CREATIVE_TEMPERATURES,
    FACTUAL_QUESTIONS,
    FACTUAL_RECIPES,
    RESULTS_PATH,
    SETTINGS,
    CreativePrompt,
    measure_factual,
    on_topic,
    recommended,
    summarise_creative,
)
from smolkit.distribution import entropy_bits
from smolkit.files import write_text_atomically
from smolkit.generation import generate
from smolkit.models import LoadedModel
from smolkit.params import SamplingParams
from smolkit.sequences import continuation_logits
from smolkit.textstats import distinct_ngram_fraction, off_top_fraction


def calibration_logits(
    lm: LoadedModel,
    prompts: Sequence[CreativePrompt] = CREATIVE_PROMPTS,
    reference: SamplingParams = CREATIVE_REFERENCE,
    tokens: int = SETTINGS["calibration"],
    seed: int = SETTINGS["seed"],
) -> torch.Tensor:
    """The raw next-token logits at every step of one ``reference`` sample per prompt (steps x vocab, all prompts
    stacked): the distributions a setting's mean entropy is measured on. No penalties are involved, so each row
    needs nothing but itself."""
    rows = []
    for i, prompt in enumerate(prompts):
        sample = generate(lm, prompt.text, reference.replace(max_new_tokens=tokens, seed=seed + i))
        rows.append(continuation_logits(lm, prompt.text, sample.token_ids)[1])
    return torch.cat(rows)


def mean_entropy(logits: torch.Tensor, temperature: float, top_p: float = 1.0) -> float:
    """Mean entropy (bits) of the rows of ``logits`` after transformers' temperature and top_p processors."""
    procs = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_p < 1:
        procs.append(TopPLogitsWarper(top_p))
    probs = torch.softmax(procs(None, logits.clone()), dim=-1)
    return sum(entropy_bits(row) for row in probs) / len(probs)


def _bisect(entropy_at: Any, lo: float, hi: float, target: float, steps: int = 30) -> float:
    """The value in [lo, hi] where the increasing function ``entropy_at`` reaches ``target`` (to 2 decimals)."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if entropy_at(mid) < target else (lo, mid)
    return round((lo + hi) / 2, 2)


def matched_settings(logits: torch.Tensor, reference: SamplingParams = CREATIVE_REFERENCE,
                     temperatures: Sequence[float] = CREATIVE_TEMPERATURES) -> dict[str, SamplingParams]:  # fmt: skip
    """Settings with the same mean entropy on ``logits`` as ``reference``: the reference itself (both knobs),
    temperature alone, top_p alone (at temperature 1), and a higher temperature with top_p tuned down."""
    target = mean_entropy(logits, reference.temperature, reference.top_p)
    t_only = _bisect(lambda t: mean_entropy(logits, t), 0.05, 2.0, target)
    p_only = _bisect(lambda p: mean_entropy(logits, 1.0, p), 0.01, 1.0, target)
    settings = {
        f"README creative (T {reference.temperature:g}, top_p {reference.top_p:g})": reference,
        f"temperature only (T {t_only:g})": SamplingParams(temperature=t_only),
        f"top_p only (top_p {p_only:g})": SamplingParams(top_p=p_only),
    }
    for t in temperatures:
        p = _bisect(lambda p, t=t: mean_entropy(logits, t, p), 0.01, 1.0, target)
        settings[f"both (T {t:g}, top_p {p:g})"] = SamplingParams(temperature=t, top_p=p)
    return settings


def measure_creative(
    lm: LoadedModel,
    settings: Mapping[str, SamplingParams],
    logits: torch.Tensor,
    prompts: Sequence[CreativePrompt] = CREATIVE_PROMPTS,
    samples: int = SETTINGS["creative_samples"],
    max_new_tokens: int = SETTINGS["creative_tokens"],
    seed: int = SETTINGS["seed"],
) -> list[dict[str, Any]]:
    """For each setting, ``samples`` texts per prompt: its mean entropy on ``logits`` and, per prompt
    (``by_prompt``), the texts that drifted off topic, diversity (distinct 3-grams across the prompt's texts) and
    the share of tokens outside the model's top 5; summarised by ``summarise_creative``."""
    rows = []
    for name, params in settings.items():
        records = []
        for i, prompt in enumerate(prompts):
            result = generate(lm, prompt.text, params.replace(n=samples, max_new_tokens=max_new_tokens, seed=seed + i))
            records.append({"id": prompt.id, "samples": samples,
                            "off_topic": sum(not on_topic(t, prompt) for t in result.texts),
                            "diversity": distinct_ngram_fraction([s.token_ids for s in result.samples]),
                            "tokens": sum(len(s) for s in result.samples),
                            "off_top5": off_top_fraction(result)})  # fmt: skip
        rows.append(summarise_creative(name, params, mean_entropy(logits, params.temperature, params.top_p), records))
    return rows


def _cpu_name() -> str:
    """The processor's model name (Linux reads it from /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment() -> dict[str, Any]:
    from importlib.metadata import version

    import transformers

    return {
        "machine": f"{_cpu_name()}, {os.cpu_count()} cores, torch using {torch.get_num_threads()} threads",
        "system": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "smolkit": version("smolkit"),
    }


def run(lm: LoadedModel, settings: Mapping[str, int] = SETTINGS, command: str = "", progress: bool = False) -> dict:
    """The whole measurement: factual recipes on FACTUAL_QUESTIONS, then the creative settings matched on
    CREATIVE_PROMPTS, with what was run where (the results file's content)."""
    start = time.perf_counter()
    factual = measure_factual(lm, samples=settings["samples"], max_new_tokens=settings["max_new_tokens"],
                              seed=settings["seed"], progress=progress)  # fmt: skip
    logits = calibration_logits(lm, tokens=settings["calibration"], seed=settings["seed"])
    matched = matched_settings(logits)
    creative = measure_creative(lm, matched, logits, samples=settings["creative_samples"],
                                max_new_tokens=settings["creative_tokens"], seed=settings["seed"])  # fmt: skip
    results = {
        "command": command,
        "environment": {**_environment(), "model": lm.description, "device": str(lm.device)},
        "settings": dict(settings),
        "questions": [q.id for q in FACTUAL_QUESTIONS],
        "creative_prompts": [p.id for p in CREATIVE_PROMPTS],
        "recipes": {name: p.to_dict() for name, p in FACTUAL_RECIPES.items()},
        "reference": CREATIVE_REFERENCE.to_dict(),
        "bootstrap": dict(BOOTSTRAP),
        "factual": factual,
        "creative": creative,
    }
    results["recommended"] = recommended(results)
    results["seconds"] = round(time.perf_counter() - start, 1)
    return results


def check_out(path: Path, overwrite: bool) -> Path:
    """``path`` as the results file to write, checked before the measurement (tens of minutes): its folder exists
    and takes a new file, and it is not an existing file (the committed results included) unless ``overwrite``."""
    path = Path(path).expanduser()
    folder = path.parent
    if path.is_dir() or not path.name:
        raise ValueError(f"--out must name a file, got {str(path)!r}, a folder")
    if not folder.is_dir():
        raise ValueError(f"--out: the folder {str(folder)!r} does not exist; create it or choose another --out")
    if path.exists() and not overwrite:
        raise ValueError(f"--out: {str(path)!r} exists; pass --overwrite to replace it, or choose another --out")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as err:
        raise ValueError(f"--out: cannot write in {str(folder)!r} ({err.strerror}); choose another --out") from None
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure the source README's advice on the embedded model.")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help=f"results file (default {RESULTS_PATH})")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists (the committed file)")
    args = parser.parse_args(argv)
    try:
        out = check_out(args.out, args.overwrite)
    except ValueError as err:
        print(f"measure_advice: {err}", file=sys.stderr)
        return 2
    from smolkit.models import load_model

    lm = load_model(device="cpu")
    command = "python bench/measure_advice.py" + (f" --out {out}" if out != RESULTS_PATH else " --overwrite")
    results = run(lm, command=command, progress=True)
    write_text_atomically(out, json.dumps(results, indent=1) + "\n")
    print(f"{out}: {results['seconds']:.0f} s; recommended {results['recommended']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
