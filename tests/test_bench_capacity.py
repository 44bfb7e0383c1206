"""bench/capacity.py's plan from fake ramps (the GPU measurement itself runs on a lent GPU), and the parts of
bench/workshop_load.py it relies on: the remedies' variants and how an overloaded kernel's outcome is told."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smolkit.testing import load_script

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str):
    """A bench script as the module ``name``, as its neighbours import it (bench/ is no package: its scripts run as
    `python bench/NAME.py`, their own folder on sys.path)."""
    return load_script(BENCH / f"{name}.py")


capacity = load("capacity")
workshop_load = load("workshop_load")
mps_clients = load("mps_clients")


def row(n: int, failure: str | None = None, gb: float | None = 0.9, context: float | None = 0.9,
        total: float | None = 80.0) -> dict:  # fmt: skip
    """A ramp step as workshop_load.summarise writes it: ``gb`` what a kernel's torch held, ``context`` the rest."""
    return {"n": n, "first_failure": failure, "reserved_gb_per_kernel": gb, "context_gb_per_kernel": context,
            "gpu_total_gb": total}  # fmt: skip


def test_the_scripts_examples_hold():
    """The planner's and the hub's split's docstring examples (bench/ and workshop/ are outside pytest's doctest
    paths)."""
    import doctest

    from smolkit.testing import load_script

    split = load_script(Path(__file__).resolve().parents[1] / "workshop" / "gpu_split.py")
    for module in (capacity, split):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_the_plan_is_the_last_n_before_the_first_over_budget():
    rows = [row(8), row(16), row(24), row(32, "slider p95 61.0 ms > 50 ms"), row(40)]
    result = capacity.plan(rows)
    assert (result.holds, result.over, result.why) == (24, 32, "slider p95 61.0 ms > 50 ms")
    assert result.max_users == 24


def test_a_failure_counts_as_over_and_a_step_after_it_is_ignored():
    rows = [row(8), row(16, "kernel 3, warm-up: GpuShareExhausted: GPU out of memory: the GPU is full."), row(24)]
    assert capacity.plan(rows).holds == 8


def test_memory_caps_max_users_when_every_step_held():
    """Every step within budget, but kernels whose torch held 2 GB with a context of 1 GB: with room for 1.25 x 2 GB
    each, 0.9 x 80 GB holds 20 of them (72 / 3.5), so the hub may not start 24."""
    result = capacity.plan([row(8, gb=2.0, context=1.0), row(16, gb=1.9, context=0.95), row(24, gb=2.0)])
    assert (result.holds, result.over, result.memory_allows, result.max_users) == (24, None, 20, 20)
    text = capacity.verdict(result, "GPU")
    assert "holds at least 24" in text and "SMOLKIT_HUB_MAX_USERS=20 SMOLKIT_HUB_GPU_CONTEXT_GB=1 " in text


def test_the_context_to_set_is_the_measured_one_rounded_up():
    assert capacity.plan([row(8, context=0.8123)]).context_setting == 0.9
    assert capacity.plan([row(8, context=0.9)]).context_setting == 0.9  # not 1.0: a float a hair over 0.9 * 10
    assert capacity.plan([row(8, gb=None, context=None, total=None)]).context_setting is None


def test_the_mps_servers_client_limit_caps_max_users():
    """Kernels small enough that 0.9 x 141 GB would hold 70 (126.9 / 1.8), every step within budget up to 56: the
    MPS server takes 48 clients (measured on an H100; the 49th is refused), so the hub may not admit more than 48."""
    rows = [row(n, gb=0.8, context=0.8, total=141.0) for n in (40, 48, 56)]
    result = capacity.plan(rows, mps_allows=48)
    assert (result.holds, result.memory_allows, result.mps_allows, result.max_users) == (56, 70, 48, 48)
    text = capacity.verdict(result, "NVIDIA H200")
    assert "one server takes 48 kernels" in text and "SMOLKIT_HUB_MAX_USERS=48" in text
    assert capacity.plan(rows).max_users == 56  # without MPS nothing limits the clients


def test_on_the_cpu_there_is_no_memory_bound_and_no_step_held_says_so():
    result = capacity.plan([row(1, "generate p95 3.50 s > 1 s", gb=None, context=None, total=None)])
    assert (result.holds, result.memory_allows, result.max_users) == (0, None, 0)
    text = capacity.verdict(result, "this CPU")
    assert "holds no participant" in text and "SMOLKIT_HUB_MAX_USERS" not in text


def test_main_prints_the_setting_and_writes_the_plan(monkeypatch, tmp_path, capsys):
    fake = [row(8), row(16), row(24, "generate p95 1.30 s > 1 s")]
    monkeypatch.setattr(capacity, "measure", lambda args: (fake, "NVIDIA H100 80GB HBM3", None))
    out = tmp_path / "capacity.json"
    capacity.main(["--n", "8,16,24", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3 holds 16 participants" in printed and "SMOLKIT_HUB_MAX_USERS=16" in printed
    assert json.loads(out.read_text())["max_users"] == 16


def test_variants_name_known_remedies_and_the_switches_add_to_each():
    args = workshop_load.parse(["--n", "4", "--variants", "base,plain", "--mps"])
    assert args.variants == [("mps",), ("mps", "plain")]
    with pytest.raises(SystemExit):
        workshop_load.parse(["--variants", "plain+turbo"])


def kernel(events: dict, failed: bool = False, log: str = "", tmp_path: Path | None = None) -> dict:
    path = tmp_path / f"kernel-{len(list(tmp_path.glob('kernel-*.log')))}.log"  # a log of its own
    path.write_text(log)
    return {"events": events, "failed": failed, "log_path": path}


def test_an_overloaded_kernel_is_told_apart_kit_raw_or_worked(tmp_path):
    outcome = workshop_load.outcome
    kit = {"type": "GpuShareExhausted", "message": "GPU out of memory: the GPU is full. 0.20 GB of ..."}
    raw = {"type": "AcceleratorError", "message": "CUDA error: out of memory\nCUDA kernel errors might be ..."}
    assert outcome(kernel({"result": {}}, tmp_path=tmp_path)) == "worked"
    assert outcome(kernel({"ready": {}}, tmp_path=tmp_path)) == "worked"  # a late arrival that came up
    assert outcome(kernel({"ready": {}}, True, log="Killed", tmp_path=tmp_path)) == "other"  # up, then failed
    assert outcome(kernel({"error": kit}, True, tmp_path=tmp_path)) == "kit"
    assert outcome(kernel({"error": raw}, True, tmp_path=tmp_path)) == "raw"
    died = "Traceback ...\ntorch.AcceleratorError: CUDA error: out of memory"
    assert outcome(kernel({}, True, log=died, tmp_path=tmp_path)) == "raw"
    assert outcome(kernel({}, True, log="Killed", tmp_path=tmp_path)) == "other"


# A kernel that hangs where it waits: faulthandler prints its stack on SIGUSR1, as the bench's worker sets it up.
SILENT = """
import faulthandler, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)
def wait_for_the_gpu():
    time.sleep(60)
print("loading", file=sys.stderr, flush=True)
wait_for_the_gpu()
"""


def test_an_overload_row_says_what_the_unexplained_kernels_saw(tmp_path):
    raw = {"stage": "warm-up", "type": "AcceleratorError", "message": "CUDA error: out of memory"}
    silent = kernel({}, True, tmp_path=tmp_path)
    with open(silent["log_path"], "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", SILENT], stderr=log)
    try:
        while "loading" not in silent["log_path"].read_text():  # its handler is registered
            time.sleep(0.05)
        kernels = [
            {**kernel({"result": {}}, tmp_path=tmp_path), "index": 0},
            {**kernel({"error": raw}, True, tmp_path=tmp_path), "index": 1},
            {**silent, "index": 2, "proc": proc},
            {**kernel({}, True, log="loading\nKilled", tmp_path=tmp_path), "index": 3, "proc": FakeProc(-9)},
        ]
        seen = workshop_load.seen_by(kernels)
    finally:
        proc.kill()
        proc.wait()
    assert seen[1] == "warm-up: AcceleratorError: CUDA error: out of memory"
    assert seen[2].startswith("no answer, alive; its stack: loading | ")  # where it waits, not only that it does
    assert "in wait_for_the_gpu" in seen[2]
    assert seen[3] == "no answer, exited -9: loading | Killed"
    many = [{**kernels[1], "index": i} for i in range(5)]
    assert list(workshop_load.seen_by(many, most=3)) == [0, 1, 2]  # the first ``most``, not every one


class FakeProc:
    def __init__(self, code):
        self.code = code

    def poll(self):
        return self.code


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the copy to another account (chown) needs root")
def test_the_kit_staged_for_other_accounts_runs_from_where_it_is_staged(monkeypatch, tmp_path):
    """A kernel of another account runs the staged copy of bench/workshop_load.py: everything it imports is there
    (the hub's MPS service was not, once, and every kernel of the accounts variant died at its first line)."""
    cache = tmp_path / "cache"
    (cache / "model").mkdir(parents=True)
    monkeypatch.setattr("smolkit.embedded.cache_dir", lambda: cache)
    env = workshop_load.stage_for_accounts(tmp_path / "staged")
    script = Path(env["SMOLKIT_LOAD_KIT"]) / "bench" / "workshop_load.py"
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": env["SMOLKIT_LOAD_KIT"]})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (Path(env["SMOLKIT_CACHE_DIR"]) / "model").is_dir()


def test_each_account_gets_its_own_copy_of_the_warm_compile_cache(tmp_path):
    import pwd

    warm = tmp_path / "inductor"
    (warm / "fxgraph").mkdir(parents=True)
    (warm / "fxgraph" / "entry").write_text("compiled")
    (warm / "locks").mkdir()
    (warm / "locks" / "a.lock").write_text("")
    nobody = pwd.getpwnam("nobody")
    args = workshop_load.parse(["--n", "2", "--compile-cache", str(warm)])
    own = workshop_load.own_compile_cache(tmp_path / "home-0", nobody.pw_uid, nobody.pw_gid, args)
    assert (own / "fxgraph" / "entry").read_text() == "compiled"
    assert not (own / "locks" / "a.lock").exists()  # a lock is the warming process's, not the account's
    assert {p.stat().st_uid for p in [own, *own.rglob("*")]} == {nobody.pw_uid}
    (warm / "fxgraph" / "entry").write_text("changed")  # the account's copy is its own
    assert (own / "fxgraph" / "entry").read_text() == "compiled"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--most", "0"], "--most must be at least 1, got 0"),
        (["--stop-after", "0"], "--stop-after must be at least 1, got 0"),
        (["--timeout", "-5"], "--timeout must be positive, got -5.0"),
    ],
)
def test_the_mps_probe_names_a_bad_setting_and_its_value(argv, message, capsys):
    with pytest.raises(SystemExit):
        mps_clients.parse(argv)
    assert message in capsys.readouterr().err


# A stand-in CUDA client for bench/mps_clients.py: the first to be told "go" gets its context, every later one waits
# (as a client past an MPS server's limit would), its stack printable as the probe's real clients'.
FIRST_ONLY = """
import faulthandler, json, os, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)
print(json.dumps({"event": "imported"}), flush=True)
sys.stdin.readline()
def wait_for_a_context():
    time.sleep(60)
try:
    os.close(os.open(os.environ["FIRST"], os.O_CREAT | os.O_EXCL))
except FileExistsError:
    wait_for_a_context()
print(json.dumps({"event": "ready", "s": 0.0}), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("first_taken", [False, True])
def test_the_mps_probe_reports_where_a_waiting_client_waits(monkeypatch, tmp_path, first_taken):
    first = tmp_path / "first"
    if first_taken:  # no client gets a context: nothing to let go, and the probe says so rather than failing
        first.write_text("")
    monkeypatch.setattr(mps_clients, "CLIENT", FIRST_ONLY)
    monkeypatch.setattr(mps_clients.workshop_load, "mps_clients", lambda env: {"servers": 1})
    args = mps_clients.parse(["--most", "4", "--timeout", "3", "--stop-after", "2"])
    result = mps_clients.probe(args, {**os.environ, "FIRST": str(first)}, tmp_path)
    events = [row["event"] for row in result["rows"]]
    assert events == (["no answer"] * 2 if first_taken else ["ready", "no answer", "no answer"])
    assert all("in wait_for_a_context" in row["stack"] for row in result["rows"] if row["event"] == "no answer")
    assert result["mps"] == {"servers": 1}
    if first_taken:
        assert "after_one_exits" not in result
    else:  # the ready client exited; the one waiting here waits on a file, not on it, so it stays silent
        assert result["after_one_exits"] == {"event": "no answer"}


# A stand-in for a GPU with two seats (as an H100's MPS server has 48): a client takes a seat that is free (no
# file, or the file of a process that has exited) and holds it while it lives; one that finds none is refused at
# once, as the 49th MPS client is.
TWO_SEATS = """
import json, os, sys
print(json.dumps({"event": "imported"}), flush=True)
sys.stdin.readline()
def holder_alive(path):
    try:
        os.kill(int(open(path).read() or 0), 0)
        return True
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return False
for seat in ("a", "b"):
    path = os.path.join(os.environ["SEATS"], seat)
    if not holder_alive(path):
        open(path, "w").write(str(os.getpid()))
        print(json.dumps({"event": "ready", "s": 0.0}), flush=True)
        break
else:
    print(json.dumps({"event": "error", "type": "GpuUnavailable", "message": "no seat"}), flush=True)
sys.stdin.read()
"""


def test_the_mps_probe_finds_the_limit_and_whether_a_seat_frees_when_a_client_exits(monkeypatch, tmp_path):
    seats = tmp_path / "seats"
    seats.mkdir()
    monkeypatch.setattr(mps_clients, "CLIENT", TWO_SEATS)
    monkeypatch.setattr(mps_clients.workshop_load, "mps_clients", lambda env: {"servers": 1})
    result = mps_clients.probe(mps_clients.parse(["--most", "4", "--timeout", "5"]),
                               {**os.environ, "SEATS": str(seats)}, tmp_path)  # fmt: skip
    assert [row["event"] for row in result["rows"]] == ["ready", "ready", "error", "error"]
    assert result["limit"] == 2 and result["rows"][2]["type"] == "GpuUnavailable"
    assert result["new_client_after_one_exits"]["event"] == "ready"  # the first client's seat, freed by its exit


def test_the_bench_splits_the_gpu_as_the_hub_does(monkeypatch, tmp_path):
    """Kernels of the load test get the hub's seats and shares (workshop/gpu_split.py) for N participants, or for
    --seats whatever N is (the overload runs: more kernels than seats); on the CPU, no seats."""
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "nvidia-smi").write_text("#!/bin/sh\necho 81559\n")
    (driver / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{driver}:/usr/bin:/bin")
    split = workshop_load.hub_split(32, workshop_load.parse(["--n", "32"]), tmp_path / "a")
    assert len(list(Path(split["SMOLKIT_GPU_SEATS"]).iterdir())) == 32
    share = workshop_load.gpu_split.kernel_fraction(81559 * 2**20, 32, 1e9)
    assert split["SMOLKIT_GPU_MEMORY_FRACTION"] == f"{share:.4g}"
    late = workshop_load.hub_split(48, workshop_load.parse(["--n", "48", "--seats", "36"]), tmp_path / "b")
    assert len(list(Path(late["SMOLKIT_GPU_SEATS"]).iterdir())) == 36
    on_cpu = workshop_load.hub_split(4, workshop_load.parse(["--n", "4", "--device", "cpu"]), tmp_path / "c")
    assert "SMOLKIT_GPU_SEATS" not in on_cpu
    with pytest.raises(SystemExit):
        workshop_load.parse(["--seats", "0"])
