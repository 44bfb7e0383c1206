"""bench/measure_advice.py, the advice measurement's runner: matched creative settings on a small case, and its
command line (the output checked before the tens of minutes the measurement takes, written atomically)."""

from __future__ import annotations

import json
import os

import pytest
from test_bench_capacity import load

from smolkit.advice import CREATIVE_PROMPTS, CREATIVE_REFERENCE, RESULTS_PATH

measure = load("measure_advice")


def test_matched_settings_have_the_reference_entropy(lm):
    logits = measure.calibration_logits(lm, CREATIVE_PROMPTS[:2], tokens=8)
    assert logits.shape == (16, lm.vocab_size)
    settings = measure.matched_settings(logits, temperatures=(1.3,))
    target = measure.mean_entropy(logits, CREATIVE_REFERENCE.temperature, CREATIVE_REFERENCE.top_p)
    assert len(settings) == 4
    for name, params in settings.items():
        assert measure.mean_entropy(logits, params.temperature, params.top_p) == pytest.approx(target, abs=0.15), name
    only_t = next(p for n, p in settings.items() if n.startswith("temperature only"))
    only_p = next(p for n, p in settings.items() if n.startswith("top_p only"))
    assert only_t.top_p == 1.0 and only_p.temperature == 1.0
    rows = measure.measure_creative(lm, dict(list(settings.items())[:2]), logits, CREATIVE_PROMPTS[:1], samples=2,
                            max_new_tokens=8)  # fmt: skip
    assert [r["samples"] for r in rows] == [2, 2] and [len(r["by_prompt"]) for r in rows] == [1, 1]
    assert all(0 <= r["off_topic_rate"] <= 1 and 0 <= r["diversity"] <= 1 for r in rows)




@pytest.fixture
def quick_run(monkeypatch):
    """bench/measure_advice.py with the measurement replaced by a stub that counts its calls (no model)."""
    import smolkit.models as models

    calls = []
    monkeypatch.setattr(models, "load_model", lambda **kw: "lm")
    monkeypatch.setattr(measure, "run", lambda lm, **kw: calls.append(kw) or {"seconds": 1.0, "recommended": {}})
    return calls


def test_advice_checks_its_output_before_measuring(quick_run, tmp_path, capsys):
    """A folder that does not exist, one that cannot be written, an existing file and the committed results are
    refused in one line, exit 2, before the measurement runs."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    (tmp_path / "old.json").write_text("{}")
    cases = {str(tmp_path / "missing" / "x.json"): "does not exist", str(locked / "x.json"): "cannot write",
             str(tmp_path / "old.json"): "--overwrite", str(tmp_path): "a folder"}  # fmt: skip
    if os.geteuid() == 0:
        del cases[str(locked / "x.json")]  # root writes anywhere
    for out, reason in cases.items():
        assert measure.main(["--out", out]) == 2
        assert reason in capsys.readouterr().err
    assert measure.main([]) == 2 and str(RESULTS_PATH) in capsys.readouterr().err
    assert quick_run == [] and (tmp_path / "old.json").read_text() == "{}"


def test_advice_writes_atomically(quick_run, tmp_path, monkeypatch):
    """The results replace the file in one step (os.replace of a temporary file beside it): a failed write
    leaves the old file whole and no temporary file behind."""
    out = tmp_path / "advice.json"
    assert measure.main(["--out", str(out)]) == 0
    assert json.loads(out.read_text())["seconds"] == 1.0
    out.write_text('{"old": 1}')

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        measure.main(["--out", str(out), "--overwrite"])
    assert json.loads(out.read_text()) == {"old": 1} and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
