"""What the embedded cache's soundness checks and the token-text cache cost (`python bench/bench_cache.py`).

Every figure beside its baseline, measured in this run:
  1. the digest check on the converted cache: the load-time check when every file is as last verified (a few
     stat calls) and after the files changed identity (a copied cache: every SHA-256 read once), beside reading
     the 538 MB without hashing; the full check doctor and `python -m smolkit convert` run;
  2. the first load_model() in a fresh process, with the cache as verified and with every digest to read;
  3. token texts with a full cache (every token of the vocabulary remembered): 1,000 one-token look-ups as
     LoadedModel.token_texts does them, beside the set difference with the whole cache it did before.
Works on a copy of the cache in a temporary SMOLKIT_CACHE_DIR; prints JSON (--out writes it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smolkit import embedded

LOAD = "import smolkit; lm = smolkit.load_model(device='cpu'); print('LOAD', lm.load_seconds)"


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_only(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(1 << 22):
            pass


def fresh_load(cache: Path) -> float:
    env = {**os.environ, "SMOLKIT_CACHE_DIR": str(cache), "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=600)
    line = [x for x in out.stdout.splitlines() if x.startswith("LOAD ")]
    if out.returncode or not line:
        raise RuntimeError(out.stderr[-3000:])
    return float(line[0].split()[1])


def digest_checks(source: Path, cache: Path) -> dict:
    folder = cache / source.name
    shutil.copytree(source, folder)
    weights = folder / "model.safetensors"
    read_only(weights)  # warm the page cache for every figure alike
    start = time.perf_counter()
    assert embedded.cache_problem(folder) is None  # new inodes: every digest read, then recorded
    changed = time.perf_counter() - start
    embedded._VERIFIED.clear()
    return {
        "weights_mb": weights.stat().st_size / 2**20,
        "check_as_verified_ms": 1000 * timed(lambda: embedded.cache_problem(folder), 50),
        "check_after_a_change_s": changed,
        "full_check_s": timed(lambda: embedded.cache_problem(folder, full=True), 3),
        "baseline_read_weights_s": timed(lambda: read_only(weights), 3),
    }


def first_loads(cache: Path) -> dict:
    folder = embedded.embedded_cache_path()
    verified = [fresh_load(cache) for _ in range(3)]
    changed = []
    for _ in range(3):
        manifest = json.loads((folder / embedded.MANIFEST).read_text())
        manifest["verified"] = {}  # as after a copy: the next process reads every digest
        (folder / embedded.MANIFEST).write_text(json.dumps(manifest))
        changed.append(fresh_load(cache))
    return {
        "first_load_as_verified_s": statistics.median(verified),
        "first_load_all_digests_s": statistics.median(changed),
    }


def token_texts() -> dict:
    import smolkit

    lm = smolkit.load_model(device="cpu")
    lm.token_texts(range(lm.vocab_size))  # a full cache, as after Distribution.top(10**9)
    ids = [[i] for i in range(1000)]
    cache = lm.token_text_cache

    def before() -> None:  # the old look-up: a set difference with the whole cache on every call
        for one in ids:
            missing = list({int(i) for i in one} - cache.keys())
            assert not missing

    return {
        "cached_tokens": len(cache),
        "lookups_1000_s": timed(lambda: [lm.token_texts(one) for one in ids], 3),
        "baseline_set_difference_1000_s": timed(before, 3),
    }


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    source = embedded.ensure_converted()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SMOLKIT_CACHE_DIR"] = tmp
        results = {
            "machine": {"platform": platform.platform(), "cpu": cpu_name(), "cpus": os.cpu_count()},
            "digest": digest_checks(source, Path(tmp)),
            "load": first_loads(Path(tmp)),
            "token_texts": token_texts(),
        }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
