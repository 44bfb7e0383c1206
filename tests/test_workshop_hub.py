"""The workshop hub as participants use it: environment/workshop.sh prepares and starts JupyterHub on loopback with
environment/jupyterhub_config.py; two people log in with the shared password, each runs notebook 00 in the smolkit
kernel of their own server; then everything stops and no hub, proxy, server or kernel process is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
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

pytestmark = pytest.mark.hub

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)  # the venv running the tests: its jupyterhub, singleuser server and smolkit kernel
USERS = ("ada", "grace")
MAX_USERS = 2
NOTEBOOK = "notebooks/00_setup.ipynb"  # the participant's copy, in their home
PROMPT = "What is the capital of France?"
TEST_CONFIG = """
load_subconfig({config!r})
c.JupyterHub.services = [{{"name": "workshop-test", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{
    "name": "workshop-test",
    "scopes": ["admin:users", "admin:servers", "access:servers", "tokens", "list:users", "read:users"],
    "services": ["workshop-test"],
}}]
"""
PROBE = """
import json, os, torch
from smolkit.doctor import doctor
from smolkit.embedded import embedded_cache_path
probe = smolkit.load_model(device="cpu")
report = doctor(verbose=False)
print(json.dumps({
    "doctor": str(report) if not report.ok else "ok",
    "env": {k: os.environ.get(k) for k in ENV_KEYS},
    "home": os.path.expanduser("~"),
    "cwd": os.getcwd(),
    "threads": torch.get_num_threads(),
    "model_folder": str(embedded_cache_path()),
    "summary": smolkit.next_token_distribution(probe, PROMPT).summary(5),
}))
"""
ENV_KEYS = ("HF_HOME", "SMOLKIT_CACHE_DIR", "HF_HUB_OFFLINE", "SMOLKIT_GPU_MEMORY_FRACTION", "PYTORCH_CUDA_ALLOC_CONF")

PREPARE_S = 600  # npm ci and the model cache (a fresh machine converts the model: minutes on 2 cores)
HUB_START_S = 120
SPAWN_S = 240
CELL_S = 600


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time: equal snapshots mean nothing wrote there."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def hub(tmp_path):
    """The workshop hub on 127.0.0.1, prepared and started by environment/workshop.sh; always stopped."""
    workshop = tmp_path / "workshop"
    cache = workshop / "cache"
    # This machine's converted embedded model, copied in, turns prepare's conversion into a check (it converts
    # when the copy is missing or unsound, as on a workshop box).
    if cache_problem(embedded_cache_path()) is None:
        shutil.copytree(embedded_cache_path(), cache / "smolkit" / embedded_cache_path().name)
    token = secrets.token_hex(24)
    ports = {name: free_port() for name in ("SMOLKIT_HUB_PORT", "SMOLKIT_HUB_API_PORT", "SMOLKIT_HUB_PROXY_API_PORT")}
    config = tmp_path / "test_config.py"
    config.write_text(TEST_CONFIG.format(config=str(REPO / "environment" / "jupyterhub_config.py"), token=token))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SMOLKIT_", "HF_"))},  # only the test's settings
        **{k: str(v) for k, v in ports.items()},
        "VENV": str(VENV),
        "SMOLKIT_WORKSHOP_DIR": str(workshop),
        "SMOLKIT_HUB_IP": "127.0.0.1",
        "SMOLKIT_HUB_PASSWORD": secrets.token_urlsafe(12),
        "SMOLKIT_HUB_MAX_USERS": str(MAX_USERS),
        "SMOLKIT_HUB_CONFIG": str(config),
    }
    started = time.perf_counter()
    prepare = subprocess.run(
        ["bash", "environment/workshop.sh", "prepare"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=PREPARE_S,
    )  # fmt: skip
    assert prepare.returncode == 0, f"workshop.sh prepare failed:\n{prepare.stdout}\n{prepare.stderr}"
    prepare_s = time.perf_counter() - started

    url = f"http://127.0.0.1:{ports['SMOLKIT_HUB_PORT']}"
    log = tmp_path / "jupyterhub.log"
    known: list[psutil.Process] = []
    with sigterm_as_interrupt():
        server = start(["bash", "environment/workshop.sh", "start"], log, env, cwd=REPO)
        try:
            wait_for(
                "the hub to answer through its proxy",
                lambda: requests.get(f"{url}/hub/api/", timeout=5).ok,
                HUB_START_S, server, log,
            )  # fmt: skip
            yield {
                "url": url, "token": token, "password": env["SMOLKIT_HUB_PASSWORD"], "workshop": workshop,
                "cache": cache, "server": server, "log": log, "known": known, "prepare_s": prepare_s,
            }  # fmt: skip
        finally:
            known.extend(family(server))
            for name in USERS:  # as an admin would: stop the servers, then the hub
                with contextlib.suppress(requests.RequestException):
                    requests.delete(
                        f"{url}/hub/api/users/{name}/server", headers={"Authorization": f"token {token}"}, timeout=30
                    )
            stuck = stop(server, known=known)
            leftovers = [p for p in alive(psutil.process_iter()) if _belongs_to(p, workshop)]
            assert not stuck, f"processes of the hub would not stop:\n{describe(stuck)}"
            assert not leftovers, f"processes of the workshop still run after the hub stopped:\n{describe(leftovers)}"


def _belongs_to(process: psutil.Process, workshop: Path) -> bool:
    """A process started for this workshop: it runs in, or names, a folder under it."""
    try:
        return str(workshop) in process.cwd() or any(str(workshop) in arg for arg in process.cmdline())
    except psutil.Error:
        return False


def test_two_participants_run_a_notebook_each(hub, lm):
    url, admin = hub["url"], {"Authorization": f"token {hub['token']}"}
    cache_before = snapshot(hub["cache"])
    writable = [p for p in [hub["cache"], *hub["cache"].rglob("*")] if p.stat().st_mode & 0o222]
    assert not writable, f"prepare left the shared cache writable: {writable[:3]}"
    timings = {"prepare": hub["prepare_s"]}
    clock = time.perf_counter()

    _, refused = login(url, USERS[0], "not-the-password")
    assert refused.status_code == 403, f"a wrong password was accepted ({refused.status_code} {refused.url})"

    browsers = {}
    for name in USERS:  # logging in starts the participant's server
        browsers[name], response = login(url, name, hub["password"])
        assert response.ok and (f"/spawn-pending/{name}" in response.url or f"/user/{name}/" in response.url), (
            f"{name}: logging in led to {response.status_code} {response.url}"
        )
    for name in USERS:
        wait_for(
            f"{name}'s server to be ready",
            lambda name=name: requests.get(f"{url}/hub/api/users/{name}", headers=admin, timeout=10)
            .json()["servers"].get("", {}).get("ready"),
            SPAWN_S, hub["server"], hub["log"],
        )  # fmt: skip
    hub["known"].extend(family(hub["server"]))  # the servers run now: remembered, in case they outlive the hub
    timings["log in and start 2 servers"], clock = time.perf_counter() - clock, time.perf_counter()

    for name, browser in browsers.items():  # what the browser sees: the OAuth round trip ends in JupyterLab
        lab = browser.get(f"{url}/user/{name}/lab", timeout=60)
        assert lab.ok and lab.url.startswith(f"{url}/user/{name}/lab"), f"{name}: JupyterLab at {lab.url}"
        assert "JupyterLab" in lab.text

    with ThreadPoolExecutor(len(USERS)) as pool:
        results = dict(zip(USERS, pool.map(lambda name: run_participant(hub, name), USERS), strict=True))
    hub["known"].extend(family(hub["server"]))  # and their kernels
    timings["run notebook 00 + probe, both at once"] = time.perf_counter() - clock

    expected_summary = smolkit.next_token_distribution(lm, PROMPT).summary(5)
    cache = hub["cache"]
    for name, result in results.items():
        probe = result["probe"]
        home = hub["workshop"] / "homes" / name
        assert result["notebooks"] == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb")), name
        assert probe["doctor"] == "ok", f"{name}: the doctor found a problem in the participant's server:\n{probe}"
        assert probe["env"] == {
            "HF_HOME": str(cache / "hf"),
            "SMOLKIT_CACHE_DIR": str(cache / "smolkit"),
            "HF_HUB_OFFLINE": "1",
            "SMOLKIT_GPU_MEMORY_FRACTION": f"{0.85 / MAX_USERS:g}",
            "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        }, name
        assert probe["home"] == str(home) and probe["cwd"] == str(home / "notebooks"), (name, probe)
        assert probe["threads"] == max(1, (os.cpu_count() or 1) // MAX_USERS), (name, probe)
        assert probe["model_folder"].startswith(str(cache / "smolkit")), (name, probe)
        assert probe["summary"] == expected_summary, f"{name}: the kernel's distribution differs from the test's"
    assert snapshot(hub["cache"]) == cache_before, "the participants' kernels wrote into the shared cache"
    print("workshop hub timings (s):", {k: round(v, 1) for k, v in timings.items()})


def login(url: str, name: str, password: str) -> tuple[requests.Session, requests.Response]:
    """Log in through the hub's login form, as a browser does; returns the browser's session (its cookies) and the
    page it ends on."""
    browser = requests.Session()
    form = browser.get(f"{url}/hub/login", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
    response = browser.post(
        f"{url}/hub/login",
        data={"username": name, "password": password, **({"_xsrf": xsrf.group(1)} if xsrf else {})},
        timeout=60,
    )
    return browser, response


def run_participant(hub: dict, name: str) -> dict:
    """In ``name``'s server: list their notebooks, open notebook 00 in the smolkit kernel (a session, as JupyterLab
    does), run its code cells in order, then a probe cell; return what they printed."""
    url, admin = hub["url"], {"Authorization": f"token {hub['token']}"}
    minted = requests.post(
        f"{url}/hub/api/users/{name}/tokens",
        headers=admin,
        json={"note": "workshop test", "expires_in": 900},
        timeout=30,
    )
    assert minted.ok, f"{name}: could not get a token: {minted.status_code} {minted.text}"
    user = {"Authorization": f"token {minted.json()['token']}"}
    api = f"{url}/user/{name}/api"

    listing = requests.get(f"{api}/contents/notebooks", headers=user, timeout=30)
    assert listing.ok, f"{name}: {listing.status_code} {listing.text}"
    notebooks = sorted(item["name"] for item in listing.json()["content"] if item["name"].endswith(".ipynb"))
    notebook = requests.get(f"{api}/contents/{NOTEBOOK}", headers=user, timeout=30).json()["content"]

    session = requests.post(
        f"{api}/sessions", headers=user, timeout=120,
        json={"path": NOTEBOOK, "type": "notebook", "name": Path(NOTEBOOK).name, "kernel": {"name": "smolkit"}},
    )  # fmt: skip
    assert session.ok, f"{name}: no smolkit kernel: {session.status_code} {session.text}"
    kernel_id = session.json()["kernel"]["id"]
    ws = websocket.create_connection(
        f"ws://{url.removeprefix('http://')}/user/{name}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4()}",
        header=[f"Authorization: {user['Authorization']}"], timeout=CELL_S,
    )  # fmt: skip
    try:
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                execute(ws, "".join(cell["source"]), f"{name}, {NOTEBOOK}")
        setup = f"PROMPT = {PROMPT!r}\nENV_KEYS = {ENV_KEYS!r}\n"
        probe = json.loads(execute(ws, setup + PROBE, f"{name}, probe").strip().splitlines()[-1])
    finally:
        ws.close()
    return {"notebooks": notebooks, "probe": probe}


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
