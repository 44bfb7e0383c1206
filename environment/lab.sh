#!/usr/bin/env bash
# Start JupyterLab on notebooks/, listening on 127.0.0.1 only, with a random token; prints the URL it serves
# once JupyterLab answers there.
#   PORT (default 8888)   the first port tried: when it is taken, the next free one (the URL printed says which)
#   JUPYTER_TOKEN         the token (default: a fresh random one)
# The token reaches JupyterLab through its environment (JUPYTER_TOKEN), never its command line: every account of
# the machine can read command lines (ps), while a process's environment is readable by its own account only.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${PORT:-8888}
JUPYTER_TOKEN=${JUPYTER_TOKEN:-$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')}
export JUPYTER_TOKEN
# The port is chosen here and JupyterLab told to take exactly that one (port_retries=0), so the URL printed is the
# URL served; JupyterLab's own retries would move to another port after the URL was printed.
PORT=$("$VENV/bin/python" - "$PORT" <<'PY'
import socket, sys
first = int(sys.argv[1])
for port in range(first, min(first + 50, 65536)):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
else:
    sys.exit(f"ports {first} to {first + 49} on 127.0.0.1 are all taken: set PORT to a free one")
PY
)
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-root)
# The URL is printed once JupyterLab answers there (environment/wait_for_lab.py, in the background); this shell
# becomes JupyterLab (exec keeps the process id the waiter watches), so Ctrl-C reaches it as before. The waiter
# starts from a subshell that ends at once, so that it is not JupyterLab's child (which would leave it a zombie).
( "$VENV/bin/python" environment/wait_for_lab.py "$PORT" "$$" & )
exec "$VENV/bin/jupyter" lab --no-browser --ip=127.0.0.1 --port="$PORT" --ServerApp.port_retries=0 \
    --ServerApp.root_dir=notebooks "${extra[@]}"
