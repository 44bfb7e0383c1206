#!/usr/bin/env bash
# Start JupyterLab on notebooks/, listening on 127.0.0.1 only, with a random token (printed in the URL).
#   PORT (default 8888)   JUPYTER_TOKEN (default: a fresh random one)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${PORT:-8888}
TOKEN=${JUPYTER_TOKEN:-$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')}
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-root)
echo "JupyterLab: http://127.0.0.1:$PORT/lab?token=$TOKEN"
exec "$VENV/bin/jupyter" lab --no-browser --ip=127.0.0.1 --port="$PORT" \
    --ServerApp.root_dir=notebooks --IdentityProvider.token="$TOKEN" "${extra[@]}"
