"""The workshop hub as participants use it, and as a hostile participant tries it, on loopback.

workshop/workshop.sh prepares the hub, makes two participants and a facilitator (system accounts with generated
passwords) and starts JupyterHub with workshop/jupyterhub_config.py. Each participant logs in with their own
password and runs notebook 00 in the smolkit kernel of their own server, which runs as their own account. Then
participant A tries what the issue lists: B's files, B's server and kernels (A's token against B's URLs, through
the hub, the proxy and B's server's own port), B's login, the hub's secrets, database and processes, the shared
cache. The facilitator sees and opens both servers; idle kernels are culled. After the stop no process, account,
group or home the test made is left.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
import websocket
from servers import alive, describe, family, free_port, sigterm_as_interrupt, start, stop, wait_for

import smolkit
from smolkit.embedded import cache_problem, embedded_cache_path
from smolkit.testing import load_script

pytestmark = [
    pytest.mark.hub,
    pytest.mark.skipif(os.geteuid() != 0, reason="makes system accounts and runs the hub as root (CI runs as root)"),
]

REPO = Path(__file__).resolve().parents[2]
GPU_SPLIT = load_script(REPO / "workshop" / "gpu_split.py")


def others_can_use(repo: Path, venv: Path) -> bool:
    """Whether an account that is neither root nor a participant can read the notebooks and reach the venv's
    folder: participants' servers run as their own accounts, from this repository and that venv."""
    check = ["runuser", "-u", "nobody", "--", "test", "-r", str(repo / "notebooks" / "00_setup.ipynb"), "-a", "-x",
             str(venv.parent)]  # fmt: skip
    return subprocess.run(check, capture_output=True).returncode == 0


def staged_kit(repo: Path) -> Path:
    """The kit's files (tracked and untracked-not-ignored, as git lists them) copied to a folder every account can
    read, for a clone that lies where participants cannot (e.g. /root/smolkit): a fixed place per clone, so the
    workshop venv built beside it is reused by the next run. Times are kept, so make sees nothing to rebuild."""
    place = Path("/var/tmp") / f"smolkit-hub-kit-{hashlib.sha256(str(repo).encode()).hexdigest()[:12]}"
    source = place / "kit"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo, capture_output=True,
        check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    shutil.rmtree(source, ignore_errors=True)
    for name in filter(None, listed):
        if (repo / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, source / name)
    modules = repo / "workshop" / "proxy" / "node_modules"
    if modules.is_dir():  # the proxy make test installed: prepare's npm ci then has nothing to fetch
        shutil.copytree(modules, source / "workshop" / "proxy" / "node_modules", symlinks=True)
    subprocess.run(["chmod", "-R", "go-w,a+rX", str(place)], check=True)
    return source


@functools.cache
def kit() -> tuple[Path, Path]:
    """The kit the hub serves and its workshop venv: this repository and SMOLKIT_WORKSHOP_VENV (make test-hub:
    .venv/workshop) where participants can use them, else a staged copy with a venv beside it."""
    venv = Path(os.environ.get("SMOLKIT_WORKSHOP_VENV") or Path(sys.prefix) / "workshop")
    if others_can_use(REPO, venv):
        return REPO, venv
    staged = staged_kit(REPO)
    return staged, staged.parent / "workshop-venv"
TAG = secrets.token_hex(3)  # names no account of the machine has, so that clean-up removes only the test's own
A, B, FACILITATOR = f"ada-{TAG}", f"grace-{TAG}", f"fac-{TAG}"
PARTICIPANTS = (A, B)
GROUP, ADMIN_GROUP = f"smolkit-t{TAG}", f"smolkit-t{TAG}-adm"
MAX_USERS, NPROC, CULL_IDLE_S = 2, 900, 15
NOTEBOOK = "notebooks/00_setup.ipynb"  # the participant's copy, in their home
PROMPT = "What is the capital of France?"
TEST_CONFIG = """
load_subconfig({config!r})
c.JupyterHub.services.append({{"name": "workshop-test", "api_token": {token!r}}})
c.JupyterHub.load_roles.append({{
    "name": "workshop-test",
    "scopes": ["admin:users", "admin:servers", "tokens", "list:users", "read:users", "list:services",
               "read:services"],
    "services": ["workshop-test"],
}})
"""
PROBE = """
import json, os, resource, torch
import jupyter_core.paths
from smolkit.doctor import doctor
from smolkit.embedded import embedded_cache_path
probe = smolkit.load_model(device="cpu")
report = doctor(verbose=False)
print(json.dumps({
    "doctor": str(report) if not report.ok else "ok",
    "env": {k: os.environ.get(k) for k in ENV_KEYS},
    "uid": os.getuid(), "groups": sorted(os.getgroups()),
    "home": os.path.expanduser("~"),
    "cwd": os.getcwd(),
    "threads": torch.get_num_threads(),
    "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
    "oom_score_adj": open("/proc/self/oom_score_adj").read().strip(),
    "model_folder": str(embedded_cache_path()),
    "runtime_dir": jupyter_core.paths.jupyter_runtime_dir(),
    "shell": os.environ.get("SHELL"),
    "summary": smolkit.next_token_distribution(probe, PROMPT).summary(5),
}))
"""
ENV_KEYS = ("HF_HOME", "SMOLKIT_CACHE_DIR", "HF_HUB_OFFLINE", "SMOLKIT_GPU_MEMORY_FRACTION", "PYTORCH_CUDA_ALLOC_CONF",
            "SMOLKIT_COMPILE_AFTER_S")
# What participant A tries from their own kernel; every attempt records what happened instead of raising.
ATTACK = r"""
import glob, json, os, resource
def attempt(what, action):
    try:
        result = action()
        outcomes[what] = "done" if result is None else f"done: {str(result)[:80]}"
    except Exception as err:
        outcomes[what] = type(err).__name__
outcomes = {}
def write(path, text="A was here"):
    with open(path, "w") as f:
        f.write(text)
attempt("list B's home", lambda: os.listdir(TARGETS["b_home"]))
attempt("read B's notebook", lambda: open(TARGETS["b_notebook"]).read())
attempt("write into B's home", lambda: write(os.path.join(TARGETS["b_home"], "from-a.txt")))
attempt("overwrite B's notebook", lambda: write(TARGETS["b_notebook"]))
for name in ("jupyterhub.sqlite", "cookie_secret", "passwords.txt"):
    attempt(f"read the hub's {name}", lambda name=name: open(os.path.join(TARGETS["state"], name), "rb").read())
attempt("list the hub's state", lambda: os.listdir(TARGETS["state"]))
attempt("read the test's config (service token)", lambda: open(TARGETS["test_config"]).read())
attempt("read the hub's environment", lambda: open(f"/proc/{TARGETS['hub_pid']}/environ", "rb").read())
attempt("read the proxy's environment", lambda: open(f"/proc/{TARGETS['proxy_pid']}/environ", "rb").read())
attempt("read B's kernel's environment", lambda: open(f"/proc/{TARGETS['b_kernel_pid']}/environ", "rb").read())
for who in ("hub", "proxy", "b_server", "b_kernel"):
    attempt(f"signal the {who}", lambda who=who: os.kill(TARGETS[f"{who}_pid"], 0))  # 0: asks only permission
attempt("write into the shared cache", lambda: write(os.path.join(TARGETS["model"], "poison.txt")))
attempt("change the cached weights", lambda: open(os.path.join(TARGETS["model"], "model.safetensors"), "r+b").close())
attempt("re-enable writes on the shared cache", lambda: os.chmod(TARGETS["model"], 0o777))
attempt("replace the cached model", lambda: os.rename(TARGETS["model"], TARGETS["model"] + ".mine"))
attempt("raise the process limit", lambda: resource.setrlimit(resource.RLIMIT_NPROC, (10**6, 10**6)))
attempt("lower the OOM-killer score", lambda: write("/proc/self/oom_score_adj", "-1000"))
cmdlines = []
for path in glob.glob("/proc/[0-9]*/cmdline"):
    try:
        cmdlines.append(open(path, "rb").read().replace(b"\0", b" ").decode(errors="replace"))
    except OSError:
        pass
environs = []
for path in glob.glob("/proc/[0-9]*/environ"):
    try:
        environs.append(open(path, "rb").read().decode(errors="replace"))
    except OSError:
        pass
print(json.dumps({"outcomes": outcomes, "cmdlines": cmdlines, "environs": environs}))
"""

OUTSIDE_SETTINGS = ("SMOLKIT_", "HF_", "VIRTUAL_ENV", "MAKE", "MFLAGS")  # the hub gets only the test's settings
PREPARE_S = 900  # a fresh machine builds the workshop's venv (~1.5 min here) and converts the model
HUB_START_S = 120
SPAWN_S = 240
CELL_S = 600


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``folder`` with its size, mtime and mode: equal snapshots mean nothing changed there."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
        for p in [folder, *folder.rglob("*")]
    }


def workshop_sh(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = ["bash", "workshop/workshop.sh", *args]
    done = subprocess.run(command, cwd=kit()[0], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"workshop.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def accounts_of_the_test() -> list[str]:
    names = []
    for name in (A, B, FACILITATOR):
        with contextlib.suppress(KeyError):
            names.append(pwd.getpwnam(name).pw_name)
    for group in (GROUP, ADMIN_GROUP, A, B, FACILITATOR):
        with contextlib.suppress(KeyError):
            names.append(f"group {grp.getgrnam(group).gr_name}")
    return names


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The workshop hub on 127.0.0.1, prepared and started by workshop/workshop.sh with the test's accounts;
    always stopped, and the accounts, groups and homes removed."""
    private = tmp_path_factory.mktemp("hub-test")  # root-only: the test's config with its service token
    workshop = Path(tempfile.mkdtemp(prefix="smolkit-workshop-"))  # homes must be reachable by their owners
    workshop.chmod(0o755)
    cache = workshop / "cache"
    # This machine's converted embedded model, copied in, turns prepare's conversion into a check (it converts
    # when the copy is missing or unsound, as on a workshop box).
    if cache_problem(embedded_cache_path()) is None:
        shutil.copytree(embedded_cache_path(), cache / "smolkit" / embedded_cache_path().name)
    token = secrets.token_hex(24)
    ports = {name: free_port() for name in ("SMOLKIT_HUB_PORT", "SMOLKIT_HUB_API_PORT", "SMOLKIT_HUB_PROXY_API_PORT")}
    config = private / "test_config.py"
    config.write_text(TEST_CONFIG.format(config=str(kit()[0] / "workshop" / "jupyterhub_config.py"), token=token))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(OUTSIDE_SETTINGS)},
        **{k: str(v) for k, v in ports.items()},
        "SMOLKIT_WORKSHOP_DIR": str(workshop),
        "SMOLKIT_WORKSHOP_VENV": str(kit()[1]),
        "SMOLKIT_HUB_GROUP": GROUP,
        "SMOLKIT_HUB_ADMIN_GROUP": ADMIN_GROUP,
        "SMOLKIT_HUB_IP": "127.0.0.1",
        "SMOLKIT_HUB_MAX_USERS": str(MAX_USERS),
        "SMOLKIT_HUB_NPROC": str(NPROC),
        "SMOLKIT_HUB_CULL_IDLE_S": str(CULL_IDLE_S),
        "SMOLKIT_HUB_CONFIG": str(config),
    }
    url = f"http://127.0.0.1:{ports['SMOLKIT_HUB_PORT']}"
    log = private / "jupyterhub.log"
    known: list[psutil.Process] = []
    problems: list[str] = []
    server = None
    with sigterm_as_interrupt():
        try:
            started = time.perf_counter()
            workshop_sh(env, "prepare", timeout=PREPARE_S)
            prepare_s = time.perf_counter() - started
            passwords = {}
            for args in ((A, B), ("--admin", FACILITATOR)):
                for line in workshop_sh(env, "users", *args).stdout.splitlines():
                    name, password = line.split()
                    passwords[name] = password
            server = start(["bash", "workshop/workshop.sh", "start"], log, env, cwd=kit()[0])
            wait_for(
                "the hub to answer through its proxy",
                lambda: requests.get(f"{url}/hub/api/", timeout=5).ok,
                HUB_START_S, server, log,
            )  # fmt: skip
            yield {
                "url": url, "token": token, "passwords": passwords, "workshop": workshop, "cache": cache,
                "server": server, "log": log, "known": known, "prepare_s": prepare_s, "config": config,
            }  # fmt: skip
        finally:
            if server is not None:
                known.extend(family(server))
                for name in PARTICIPANTS:  # as an admin would: stop the servers, then the hub
                    with contextlib.suppress(requests.RequestException):
                        requests.delete(
                            f"{url}/hub/api/users/{name}/server",
                            headers={"Authorization": f"token {token}"},
                            timeout=30,
                        )
                stuck = stop(server, known=known)
                problems += [f"processes of the hub would not stop:\n{describe(stuck)}"] if stuck else []
            leftovers = [p for p in alive(psutil.process_iter()) if _belongs_to(p, workshop)]
            problems += [f"processes of the workshop still run:\n{describe(leftovers)}"] if leftovers else []
            with contextlib.suppress(AssertionError):
                workshop_sh(env, "remove", "--all")
            for name in (A, B, FACILITATOR):  # whatever `remove` left (it refuses accounts that still run things)
                subprocess.run(["userdel", "--remove", name], capture_output=True)
            for group in (GROUP, ADMIN_GROUP):
                subprocess.run(["groupdel", group], capture_output=True)
            left = accounts_of_the_test()
            problems += [f"accounts or groups of the test are left: {left}"] if left else []
            shutil.rmtree(workshop, ignore_errors=True)
    assert not problems, "\n".join(problems)


def _belongs_to(process: psutil.Process, workshop: Path) -> bool:
    """A process started for this workshop: one of the test's accounts runs it, or it runs in or names its folder."""
    try:
        owner = process.username()
        return (
            owner in (A, B, FACILITATOR)
            or str(workshop) in process.cwd()
            or any(str(workshop) in arg for arg in process.cmdline())
        )
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def participants(hub):
    """Both participants logged in through the login form with their own password (which starts their servers),
    each with a browser session and an API token of their own."""
    url, admin = hub["url"], {"Authorization": f"token {hub['token']}"}
    sessions = {}
    for name in PARTICIPANTS:
        browser, response = login(url, name, hub["passwords"][name])
        assert response.ok and (f"/spawn-pending/{name}" in response.url or f"/user/{name}/" in response.url), (
            f"{name}: logging in with their own password led to {response.status_code} {response.url}"
        )
        sessions[name] = {"browser": browser}
    for name in PARTICIPANTS:
        wait_for(
            f"{name}'s server to be ready",
            lambda name=name: requests.get(f"{url}/hub/api/users/{name}", headers=admin, timeout=10)
            .json()["servers"].get("", {}).get("ready"),
            SPAWN_S, hub["server"], hub["log"],
        )  # fmt: skip
        sessions[name]["token"] = mint_token(hub, name)
    hub["known"].extend(family(hub["server"]))  # the servers run now: remembered, in case they outlive the hub
    return sessions


@pytest.fixture(scope="module")
def kernels(hub, participants):
    """Notebook 00 and the probe run in each participant's smolkit kernel, both at once; their kernels stay."""
    with ThreadPoolExecutor(len(PARTICIPANTS)) as pool:
        runs = pool.map(lambda name: run_participant(hub, name, participants[name]["token"]), PARTICIPANTS)
        results = dict(zip(PARTICIPANTS, runs, strict=True))
    hub["known"].extend(family(hub["server"]))  # and their kernels
    return results


def test_each_participant_logs_in_with_their_own_password_only(hub, participants):
    url, passwords = hub["url"], hub["passwords"]
    assert len(set(passwords.values())) == 3 and all(len(p) >= 16 for p in passwords.values())
    attempts = {
        "A's password for B": (B, passwords[A]),
        "the facilitator's password for A": (A, passwords[FACILITATOR]),
        "a wrong password": (A, "not-the-password"),
        "root, with A's password": ("root", passwords[A]),
        "an unknown name": (f"nobody-{TAG}", passwords[A]),
    }
    with ThreadPoolExecutor(len(attempts)) as pool:  # PAM waits 3 s after each failure: in parallel
        outcomes = dict(zip(attempts, pool.map(lambda a: login(url, *a)[1], attempts.values()), strict=True))
    accepted = {what: f"{r.status_code} {r.url}" for what, r in outcomes.items() if r.status_code != 403}
    assert not accepted, f"logins that should have been refused: {accepted}"
    for name in PARTICIPANTS:  # the fixture's logins: each browser is its participant, and only that one
        whoami = participants[name]["browser"].get(f"{url}/hub/api/user", timeout=10)
        assert whoami.ok and whoami.json()["name"] == name, (name, whoami.status_code, whoami.text[:200])


@pytest.fixture(scope="module")
def lm():
    """The embedded model on the CPU, the test's own reference (tests/conftest.py's fixtures stay in that room)."""
    return smolkit.load_model("embedded", device="cpu")


def test_the_notebook_runs_in_each_participants_own_server_and_account(hub, kernels, lm):
    cache = hub["cache"]
    writable = [p for p in [cache, *cache.rglob("*")] if p.stat().st_mode & 0o222 or p.stat().st_uid != 0]
    assert not writable, f"prepare left the shared cache writable or not root's: {writable[:3]}"
    expected_summary = smolkit.next_token_distribution(lm, PROMPT).summary(5)
    for name, result in kernels.items():
        probe, account = result["probe"], pwd.getpwnam(name)
        home = Path(account.pw_dir)
        assert home.parent == hub["workshop"] / "homes", (name, home)
        mode = home.stat()
        assert (mode.st_uid, stat.S_IMODE(mode.st_mode)) == (account.pw_uid, 0o700), f"{name}'s home: {mode}"
        assert result["notebooks"] == sorted(p.name for p in (kit()[0] / "notebooks").glob("*.ipynb")), name
        assert probe["doctor"] == "ok", f"{name}: the doctor found a problem in the participant's server:\n{probe}"
        assert probe["uid"] == account.pw_uid and 0 not in probe["groups"], f"{name}'s kernel runs as {probe}"
        assert probe["env"] == {
            "HF_HOME": str(cache / "hf"),
            "SMOLKIT_CACHE_DIR": str(cache / "smolkit"),
            "HF_HUB_OFFLINE": "1",
            "SMOLKIT_GPU_MEMORY_FRACTION": f"{GPU_SPLIT.USE / MAX_USERS:.4g}",  # no GPU here: no seats either
            "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
            "SMOLKIT_COMPILE_AFTER_S": "never",
        }, name
        assert probe["home"] == str(home) and probe["cwd"] == str(home / "notebooks"), (name, probe)
        assert probe["threads"] == max(1, (os.cpu_count() or 1) // MAX_USERS), (name, probe)
        assert probe["nproc"] == [NPROC, NPROC] and probe["oom_score_adj"] == "500", (name, probe)
        assert probe["model_folder"].startswith(str(cache / "smolkit")), (name, probe)
        assert probe["runtime_dir"].startswith(str(home) + "/"), f"{name}'s kernel connection files: {probe}"
        assert probe["shell"] == "/bin/bash" and account.pw_shell == "/usr/sbin/nologin", (name, probe)
        assert probe["summary"] == expected_summary, f"{name}: the kernel's distribution differs from the test's"


def test_a_participant_cannot_reach_another_participants_server(hub, participants, kernels):
    url, a_token, b_token = hub["url"], participants[A]["token"], participants[B]["token"]
    b_kernel = kernels[B]["kernel_id"]
    b_port = server_port(B)
    urls = {
        "B's files, through the proxy": f"{url}/user/{B}/api/contents/notebooks",
        "B's kernel, through the proxy": f"{url}/user/{B}/api/kernels/{b_kernel}",
        "B's files, at B's server's own port": f"http://127.0.0.1:{b_port}/user/{B}/api/contents/notebooks",
        "B's account, in the hub's API": f"{url}/hub/api/users/{B}",
    }
    for what, target in urls.items():  # B's own token reaches each (the control), A's none
        assert requests.get(target, headers=auth(b_token), timeout=30).ok, f"{what}: B's own token was refused"
        answer = requests.get(target, headers=auth(a_token), timeout=30)
        assert answer.status_code in (403, 404), f"{what}: A's token got {answer.status_code} {answer.text[:200]}"
    for method in ("post", "delete"):  # start or stop B's server
        answer = getattr(requests, method)(f"{url}/hub/api/users/{B}/server", headers=auth(a_token), timeout=30)
        assert answer.status_code in (403, 404), f"{method} B's server with A's token: {answer.status_code}"
    answer = requests.post(f"{url}/user/{B}/api/kernels", headers=auth(a_token), json={"name": "smolkit"}, timeout=30)
    assert answer.status_code == 403, f"A started a kernel in B's server: {answer.status_code}"
    for base in (f"ws://127.0.0.1:{url.rsplit(':', 1)[1]}", f"ws://127.0.0.1:{b_port}"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(
                f"{base}/user/{B}/api/kernels/{b_kernel}/channels?session_id={uuid.uuid4()}",
                header=[f"Authorization: token {a_token}"], timeout=30,
            ).close()  # fmt: skip
        assert refused.value.status_code == 403, f"A's token opened B's kernel at {base}"
    page = participants[A]["browser"].get(f"{url}/user/{B}/lab", timeout=60)  # A's logged-in browser
    assert page.status_code == 403 and "JupyterLab" not in page.text, f"A's browser on B's lab: {page.status_code}"
    assert requests.get(f"{url}/user/{B}/api/status", headers=auth(b_token), timeout=30).ok  # B's server is fine


def test_a_participant_cannot_touch_anothers_files_the_hubs_secrets_or_the_shared_cache(hub, participants, kernels):
    state, cache = hub["workshop"] / "hub", hub["cache"]
    cache_before = snapshot(cache)
    hub_process = psutil.Process(hub["server"].pid)
    hub_pid = next(p.pid for p in [hub_process, *hub_process.children(recursive=True)] if "jupyterhub" in p.name())
    proxy_pid = next(p.pid for p in hub_process.children(recursive=True) if "node" in p.name())
    targets = {
        "b_home": pwd.getpwnam(B).pw_dir,
        "b_notebook": os.path.join(pwd.getpwnam(B).pw_dir, NOTEBOOK),
        "state": str(state),
        "test_config": str(hub["config"]),
        "model": str(cache / "smolkit" / embedded_cache_path().name),
        "hub_pid": hub_pid,
        "proxy_pid": proxy_pid,
        "b_server_pid": kernels[B]["server_pid"],
        "b_kernel_pid": kernels[B]["kernel_pid"],
    }
    b_home_before = snapshot(Path(targets["b_home"]))
    code = f"TARGETS = {targets!r}\n" + ATTACK
    found = json.loads(in_kernel(hub, A, participants[A]["token"], kernels[A]["kernel_id"], code).splitlines()[-1])
    succeeded = {what: outcome for what, outcome in found["outcomes"].items() if outcome.startswith("done")}
    assert not succeeded, f"participant A could: {succeeded}"
    assert "lower the OOM-killer score" in found["outcomes"], "the attack stopped short"
    assert snapshot(cache) == cache_before, "the shared cache changed"
    assert snapshot(Path(targets["b_home"])) == b_home_before, "B's home changed"
    secrets_ = {
        "a password": [*hub["passwords"].values()],
        "the test's service token": [hub["token"]],
        "B's token": [participants[B]["token"]],
        "the cookie secret": [(state / "cookie_secret").read_text().strip()[:32]],
    }
    seen = "\n".join(found["cmdlines"] + found["environs"])  # every command line A sees, every environment A reads
    leaked = [what for what, values in secrets_.items() if any(value in seen for value in values)]
    assert not leaked, f"participant A reads {leaked} in the processes' command lines or environments"
    assert any("jupyterhub" in line for line in found["cmdlines"])  # A does see the processes, just nothing secret


@pytest.fixture(scope="module")
def unusable_cache_loads(hub, participants, kernels):
    """Participant A's kernel loads the embedded model from a shared cache that is missing, and from one whose
    weights are damaged (both root's and read-only, as `prepare` leaves the real one), each in a fresh process."""
    caches = {"missing": hub["workshop"] / "cache-missing", "damaged": hub["workshop"] / "cache-damaged"}
    caches["missing"].mkdir()
    model = caches["damaged"] / embedded_cache_path().name
    shutil.copytree(hub["cache"] / "smolkit" / model.name, model, ignore=shutil.ignore_patterns("*.safetensors"))
    (model / "model.safetensors").write_bytes(b"\0" * 1000)  # the right name, the wrong size
    for folder in caches.values():
        subprocess.run(["chmod", "-R", "a-w,a+rX", str(folder)], check=True)
    before = {kind: snapshot(folder) for kind, folder in caches.items()}
    code = f"CACHES = { ({k: str(v) for k, v in caches.items()})!r}\n" + LOAD_FROM
    found = json.loads(in_kernel(hub, A, participants[A]["token"], kernels[A]["kernel_id"], code).splitlines()[-1])
    return {kind: {**found[kind], "changed": snapshot(caches[kind]) != before[kind]} for kind in caches}


LOAD_FROM = r"""
import json, os, subprocess, sys, time
runs = {}
for kind, folder in CACHES.items():
    runs[kind] = (time.monotonic(), subprocess.Popen(
        [sys.executable, "-c", "import smolkit; smolkit.load_model()"], env=dict(os.environ, SMOLKIT_CACHE_DIR=folder),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
found = {}
for kind, (started, process) in runs.items():
    output = process.communicate(timeout=300)[0]
    found[kind] = {"rc": process.returncode, "seconds": time.monotonic() - started, "output": output[-3000:]}
print(json.dumps(found))
"""


def test_a_kernel_never_converts_into_the_shared_cache(unusable_cache_loads):
    """No participant's kernel can write the shared cache, so none rebuilds it (nor races another doing so): a
    missing or damaged cache fails the load and stays as it was; `workshop.sh prepare` is what rebuilds it."""
    for kind, run in unusable_cache_loads.items():
        assert run["rc"] != 0, f"a load from the {kind} shared cache succeeded:\n{run['output']}"
        assert not run["changed"], f"a participant's kernel wrote into the {kind} shared cache"


def test_a_kernel_that_finds_the_shared_cache_unusable_says_what_to_do(unusable_cache_loads):
    for kind, run in unusable_cache_loads.items():
        output = run["output"]
        assert "SMOLKIT_CACHE_DIR" in output and "workshop.sh prepare" in output, f"{kind}:\n{output}"
        assert "converting" not in output and "PermissionError" not in output, f"{kind}:\n{output}"


def test_the_facilitator_sees_and_opens_both_servers(hub, participants):
    url = hub["url"]
    _, response = login(url, FACILITATOR, hub["passwords"][FACILITATOR], then="/hub/admin")
    assert response.ok and response.url.endswith("/hub/admin"), f"the facilitator's login led to {response.url}"
    token = mint_token(hub, FACILITATOR)
    users = {u["name"]: u for u in requests.get(f"{url}/hub/api/users", headers=auth(token), timeout=30).json()}
    for name in PARTICIPANTS:
        assert users[name]["servers"][""]["ready"], f"the facilitator does not see {name}'s server"
        listing = requests.get(f"{url}/user/{name}/api/contents/notebooks", headers=auth(token), timeout=30)
        assert listing.ok, f"the facilitator cannot open {name}'s server: {listing.status_code}"
    assert users[FACILITATOR]["admin"] and not any(users[name]["admin"] for name in PARTICIPANTS)


def test_past_max_users_a_newcomer_gets_jupyterhubs_answer_and_the_running_servers_stay(hub, participants):
    """SMOLKIT_HUB_MAX_USERS is JupyterHub's active_server_limit: with both participants' servers up, a third
    server is refused with JupyterHub's own message, what a newcomer sees past the capacity the facilitator set
    (`workshop.sh capacity`), rather than a kernel starting on a full GPU; the running servers are untouched."""
    url = hub["url"]
    third = requests.post(f"{url}/hub/api/users/{FACILITATOR}/server", headers=auth(hub["token"]), timeout=60)
    assert third.status_code == 429 and "Active user limit exceeded" in third.text, (third.status_code, third.text)
    users = {u["name"]: u for u in requests.get(f"{url}/hub/api/users", headers=auth(hub["token"]), timeout=30).json()}
    assert not users[FACILITATOR]["servers"]
    assert all(users[name]["servers"][""]["ready"] for name in PARTICIPANTS)


def test_idle_kernels_are_culled_and_the_server_culler_runs(hub, participants, kernels):
    """Kernels idle for SMOLKIT_HUB_CULL_IDLE_S are shut down by each server (their memory, GPU included, goes
    with the process); servers idle for an hour are stopped by jupyterhub-idle-culler, a hub service that runs as
    `nobody` with only the scopes it needs (its culling is jupyterhub-idle-culler's own, tested upstream)."""
    url = hub["url"]
    pids = [kernels[name]["kernel_pid"] for name in PARTICIPANTS]
    deadline = time.monotonic() + CULL_IDLE_S * 4 + 30
    while time.monotonic() < deadline and any(psutil.pid_exists(pid) for pid in pids):
        time.sleep(1)
    for name in PARTICIPANTS:
        listed = requests.get(f"{url}/user/{name}/api/kernels", headers=auth(participants[name]["token"]), timeout=30)
        assert listed.ok and listed.json() == [], f"{name}'s kernels after {CULL_IDLE_S} s idle: {listed.text}"
    assert not any(psutil.pid_exists(pid) for pid in pids), "culled kernels' processes still run"
    culler = [p for p in family(hub["server"]) if "jupyterhub_idle_culler" in " ".join(p.cmdline())]
    assert len(culler) == 1 and culler[0].username() == "nobody", describe(culler)
    services = requests.get(f"{url}/hub/api/services", headers=auth(hub["token"]), timeout=30).json()
    assert "idle-culler" in services


# -- helpers -------------------------------------------------------------------------------------------------------


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


def login(url: str, name: str, password: str, then: str = "") -> tuple[requests.Session, requests.Response]:
    """Log in through the hub's login form, as a browser does (going on to page ``then``, by default the user's
    server); returns the browser's session (its cookies) and the page it ends on."""
    browser = requests.Session()
    form = browser.get(f"{url}/hub/login", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
    response = browser.post(
        f"{url}/hub/login" + (f"?next={then}" if then else ""),
        data={"username": name, "password": password, **({"_xsrf": xsrf.group(1)} if xsrf else {})},
        timeout=60,
    )
    return browser, response


def mint_token(hub: dict, name: str) -> str:
    minted = requests.post(
        f"{hub['url']}/hub/api/users/{name}/tokens",
        headers=auth(hub["token"]),
        json={"note": "workshop test", "expires_in": 900},
        timeout=30,
    )
    assert minted.ok, f"{name}: could not get a token: {minted.status_code} {minted.text}"
    return minted.json()["token"]


def server_port(name: str) -> int:
    """The port the participant's single-user server listens on (found from its process, as root)."""
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.username() == name and "jupyterhub-singleuser" in " ".join(p.cmdline()):
                return next(c.laddr.port for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN)
    raise AssertionError(f"no single-user server of {name} runs")


def run_participant(hub: dict, name: str, token: str) -> dict:
    """In ``name``'s server: list their notebooks, open notebook 00 in the smolkit kernel (a session, as JupyterLab
    does), run its code cells in order, then a probe cell; return what they printed and the kernel's ids."""
    api = f"{hub['url']}/user/{name}/api"
    listing = requests.get(f"{api}/contents/notebooks", headers=auth(token), timeout=30)
    assert listing.ok, f"{name}: {listing.status_code} {listing.text}"
    notebooks = sorted(item["name"] for item in listing.json()["content"] if item["name"].endswith(".ipynb"))
    notebook = requests.get(f"{api}/contents/{NOTEBOOK}", headers=auth(token), timeout=30).json()["content"]
    session = requests.post(
        f"{api}/sessions", headers=auth(token), timeout=120,
        json={"path": NOTEBOOK, "type": "notebook", "name": Path(NOTEBOOK).name, "kernel": {"name": "smolkit"}},
    )  # fmt: skip
    assert session.ok, f"{name}: no smolkit kernel: {session.status_code} {session.text}"
    kernel_id = session.json()["kernel"]["id"]
    code = [("".join(cell["source"]), NOTEBOOK) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    setup = f"PROMPT = {PROMPT!r}\nENV_KEYS = {ENV_KEYS!r}\n"
    code += [(setup + PROBE, "probe"), ("import os; print(os.getpid(), os.getppid())", "pids")]
    outputs = in_kernel(hub, name, token, kernel_id, *code)
    kernel_pid, server_pid = (int(n) for n in outputs[-1].split())
    probe = json.loads(outputs[-2].strip().splitlines()[-1])
    return {
        "notebooks": notebooks, "probe": probe, "kernel_id": kernel_id, "kernel_pid": kernel_pid,
        "server_pid": server_pid,
    }  # fmt: skip


def in_kernel(hub: dict, name: str, token: str, kernel_id: str, *cells) -> list[str] | str:
    """Run cells (code, or (code, where) pairs) in ``name``'s kernel over its websocket, through the proxy; returns
    each cell's output (a single string for a single cell)."""
    ws = websocket.create_connection(
        f"ws://{hub['url'].removeprefix('http://')}/user/{name}/api/kernels/{kernel_id}/channels"
        f"?session_id={uuid.uuid4()}",
        header=[f"Authorization: token {token}"], timeout=CELL_S,
    )  # fmt: skip
    try:
        outputs = []
        for cell in cells:
            code, where = cell if isinstance(cell, tuple) else (cell, "a cell")
            outputs.append(execute(ws, code, f"{name}, {where}"))
    finally:
        ws.close()
    return outputs[0] if len(cells) == 1 else outputs


def execute(ws: websocket.WebSocket, code: str, where: str) -> str:
    """Run ``code`` in the kernel behind ``ws`` (Jupyter messaging protocol); return its stdout and text results.
    A cell that raises fails the test with the traceback."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "", "session": uuid.uuid4().hex,
                   "version": "5.4", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))  # fmt: skip
    text, deadline = [], time.monotonic() + CELL_S
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id or msg.get("channel") != "iopub":
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            text.append(content["text"])
        elif kind in ("execute_result", "display_data") and "text/plain" in content.get("data", {}):
            text.append(content["data"]["text/plain"] + "\n")
        elif kind == "error":
            traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(content["traceback"]))
            raise AssertionError(f"{where}: a cell failed:\n{code}\n{traceback}")
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(text)
    raise AssertionError(f"{where}: a cell ran longer than {CELL_S} s:\n{code}")
