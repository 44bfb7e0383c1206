"""`make lab` (environment/lab.sh): JupyterLab on 127.0.0.1 with a token that no other account can read (it goes
through the environment, not the command line that `ps` shows everyone), and the URL printed is the one served,
also when the first port is taken."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from servers import family, free_port, start, stop, wait_for

from smolkit.testing import load_script

REPO = Path(__file__).resolve().parents[1]
LAB = str(REPO / "environment" / "lab.sh")
URL = re.compile(r"JupyterLab: http://127\.0\.0\.1:(\d+)/lab\?token=(\S+)")


FAKE_JUPYTER = """#!/bin/sh
printf "%s\\n" "$@" > "$ARGS_OUT"
printf "%s" "$JUPYTER_TOKEN" > "$TOKEN_OUT"
for arg in "$@"; do case "$arg" in --port=*) port=${arg#--port=} ;; esac; done
exec "$(dirname "$0")/python" -c '
import http.server, sys
class Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Status).handle_request()
' "$port"
"""


def _fake_venv(tmp_path: Path) -> Path:
    """A venv whose `jupyter` writes its arguments and its JUPYTER_TOKEN to files, then answers one request on
    its port (what lab.sh waits for before it prints the URL) instead of starting a server."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    jupyter = venv / "bin" / "jupyter"
    jupyter.write_text(FAKE_JUPYTER)
    jupyter.chmod(0o755)
    return venv


@contextlib.contextmanager
def taken_port():
    """A port on 127.0.0.1 that something listens on for the duration."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def run_fake(tmp_path: Path, **settings: str) -> tuple[list[str], str, int, str]:
    """lab.sh with the fake venv: the arguments JupyterLab got, the token in its environment, the port and token
    in the URL printed."""
    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_TOKEN", "PORT")}
    env.update(VENV=str(_fake_venv(tmp_path)), ARGS_OUT=str(tmp_path / "args"), TOKEN_OUT=str(tmp_path / "token"))
    env.update(settings)
    out = subprocess.run(["bash", LAB], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    port, token = URL.search(out.stdout).groups()
    return (tmp_path / "args").read_text().splitlines(), (tmp_path / "token").read_text(), int(port), token


@pytest.mark.parametrize("given_token", [None, "", "my-own-token-0123456789abcdef"], ids=["unset", "empty", "set"])
def test_the_token_goes_through_the_environment_not_the_command_line(tmp_path, given_token):
    port = free_port()
    settings = {"PORT": str(port)} | ({} if given_token is None else {"JUPYTER_TOKEN": given_token})
    args, environment_token, printed_port, printed_token = run_fake(tmp_path, **settings)
    assert environment_token == printed_token
    assert not any(printed_token in arg for arg in args), f"the token is on JupyterLab's command line: {args}"
    assert not any(re.search(r"token|password", arg, re.IGNORECASE) for arg in args), args
    if given_token:
        assert printed_token == given_token
    else:  # never an empty token (which would switch authentication off): a fresh random one
        assert re.fullmatch(r"[0-9a-f]{48}", printed_token)
    assert args[0] == "lab" and "--no-browser" in args and "--ip=127.0.0.1" in args
    assert printed_port == port and f"--port={port}" in args and "--ServerApp.port_retries=0" in args
    risky = [a for a in args if re.search(r"0\.0\.0\.0|ip=\*|allow_remote|disable_check_xsrf", a)]
    assert risky == []


def test_a_taken_port_moves_the_printed_url_too(tmp_path):
    with taken_port() as port:
        args, _, printed_port, _ = run_fake(tmp_path, PORT=str(port))
    assert printed_port != port and f"--port={printed_port}" in args and "--ServerApp.port_retries=0" in args


def test_the_real_lab_serves_the_url_it_printed_and_ps_never_shows_the_token(tmp_path):
    """`make lab`'s script started for real (configuration isolated in tmp_path) while its first port is taken;
    the printed URL answers, requests without the token are refused, no command line holds the token."""
    token = secrets.token_hex(16)
    env = dict(os.environ, VENV=sys.prefix, JUPYTER_TOKEN=token, JUPYTER_PLATFORM_DIRS="1")
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_WORKSPACES_DIR"):
        (tmp_path / var).mkdir()
        env[var] = str(tmp_path / var)
    log = tmp_path / "lab.log"
    with taken_port() as port:
        env["PORT"] = str(port)
        server = start(["bash", LAB], log, env)
        try:
            printed = wait_for("the URL", lambda: URL.search(log.read_text()), 180, server, log)
            url, printed_token = f"http://127.0.0.1:{printed.group(1)}", printed.group(2)
            assert printed_token == token and int(printed.group(1)) != port
            # issue 23, item 15: printed once JupyterLab answers, not seconds before
            assert requests.get(f"{url}/api/status", params={"token": token}, timeout=5).ok
            assert requests.get(f"{url}/api/status", timeout=5).status_code == 403
            assert requests.get(f"{url}/api/contents", params={"token": "wrong"}, timeout=5).status_code == 403
            assert requests.get(f"{url}/lab", params={"token": token}, timeout=5).status_code == 200
            ps = subprocess.run(["ps", "-eo", "pid,args", "--width", "100000"], capture_output=True, text=True)
            assert token not in ps.stdout, "the token shows in `ps`"
            lab = [p for p in family(server) if "jupyter" in " ".join(p.cmdline())]
            assert lab and all(token not in " ".join(p.cmdline()) for p in lab)
            assert all(os.stat(f"/proc/{p.pid}/environ").st_mode & 0o077 == 0 for p in lab)  # owner only
        finally:
            assert stop(server) == []


# -- issue 23, item 15: the URL is printed once JupyterLab answers --------------------------------------------------


def _waiter():
    return load_script(REPO / "environment" / "wait_for_lab.py")


class _Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.headers.get("Authorization") == "token t0k" else 403)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_waiter_returns_once_a_server_that_starts_late_answers():
    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), _Status, bind_and_activate=False)
    starter = threading.Timer(1.0, lambda: (server.server_bind(), server.server_activate(), server.serve_forever()))
    starter.start()
    started, outcome = time.monotonic(), None
    try:
        outcome = _waiter().wait_until_answers(f"http://127.0.0.1:{port}/api/status", os.getpid(),
                                               {"Authorization": "token t0k"}, timeout_s=30)  # fmt: skip
        assert outcome == "answered" and time.monotonic() - started >= 1.0
    finally:
        starter.cancel()  # when it has not fired yet
        if outcome == "answered":  # serve_forever runs: shutdown stops it (before it runs, shutdown would hang)
            server.shutdown()
        starter.join(timeout=30)
        server.server_close()


def test_the_waiter_gives_up_when_the_server_process_ends_or_the_time_is_up():
    waiter = _waiter()
    url = f"http://127.0.0.1:{free_port()}/api/status"  # nothing listens
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    while Path(f"/proc/{ended.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
        time.sleep(0.05)  # ended, not reaped yet: a zombie, as JupyterLab is until make reaps it
    assert waiter.wait_until_answers(url, ended.pid, timeout_s=30) == "exited"
    ended.wait()
    started = time.monotonic()
    assert waiter.wait_until_answers(url, os.getpid(), timeout_s=0.5) == "timeout"
    assert time.monotonic() - started < 10


def test_a_wrong_token_is_no_answer():
    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), _Status)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}/api/status"
        assert _waiter().wait_until_answers(url, os.getpid(), {"Authorization": "token no"}, timeout_s=0.5) == "timeout"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
