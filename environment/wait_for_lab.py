"""Wait until the JupyterLab that `make lab` starts answers, then print its URL (environment/lab.sh runs this).

JupyterLab takes a few seconds to start; a URL printed before it answers gives a learner who opens it at once a
refused connection. So lab.sh starts this in the background and then becomes JupyterLab (``exec``, same process
id), and this prints the URL once ``/api/status`` answers with the token, gives up when that process ends, and
after WAIT_S says it has not answered yet. The token comes from the environment (JUPYTER_TOKEN), never the
command line (which every account can read with ``ps``).

    python environment/wait_for_lab.py PORT PID

Hand-written: a few lines of the standard library (the venv may lack requests).
"""

from __future__ import annotations

import http.client
import os
import sys
import time
import urllib.request
from pathlib import Path

WAIT_S = 120.0
"""How long to wait for JupyterLab to answer (it takes 3-15 s; a cold disk or a loaded machine more)."""


def running(pid: int) -> bool:
    """Whether process ``pid`` still runs: it exists and is not a zombie (an ended process its parent has not
    reaped yet, which ``os.kill(pid, 0)`` still finds)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():  # not Linux: os.kill is all there is
        return True
    return stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"


def answers(url: str, headers: dict[str, str]) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status == 200
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, an HTTP error status, garbage
        return False


def wait_until_answers(url: str, pid: int, headers: dict[str, str] | None = None, timeout_s: float = WAIT_S,
                       interval_s: float = 0.25) -> str:  # fmt: skip
    """Poll ``url`` until it answers 200 ("answered"), process ``pid`` ends ("exited") or ``timeout_s`` passes
    ("timeout")."""
    deadline = time.monotonic() + timeout_s
    while True:
        if answers(url, headers or {}):
            return "answered"
        if not running(pid):
            return "exited"
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(interval_s)


def main(argv: list[str]) -> int:
    port, pid = int(argv[0]), int(argv[1])
    token = os.environ["JUPYTER_TOKEN"]
    base = f"http://127.0.0.1:{port}"
    outcome = wait_until_answers(f"{base}/api/status", pid, {"Authorization": f"token {token}"})
    if outcome == "answered":
        print(f"JupyterLab: {base}/lab?token={token}", flush=True)
    elif outcome == "timeout":
        print(f"JupyterLab has not answered at {base} after {WAIT_S:.0f} s; when it does, open "
              f"{base}/lab?token={token}", file=sys.stderr, flush=True)  # fmt: skip
    return 0 if outcome == "answered" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
