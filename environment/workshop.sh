#!/usr/bin/env bash
# The smolkit workshop hub (JupyterHub) on one box. See environment/README.md, "Workshop".
#
#   environment/workshop.sh prepare   install the hub's proxy (npm ci), fill the shared model cache, make it read-only
#   environment/workshop.sh start     run the hub in the foreground (Ctrl-C stops it and every participant's server)
#
#   VENV                     the project venv (default .venv; `make setup` creates it)
#   SMOLKIT_WORKSHOP_DIR     hub state, participants' homes, shared cache (default ~/smolkit-workshop)
#   SMOLKIT_WORKSHOP_CACHE   the shared model cache (default $SMOLKIT_WORKSHOP_DIR/cache)
#   SMOLKIT_WORKSHOP_MODELS  prepare: Hub models to put in the cache too, space-separated (needs the network), e.g.
#                            "HuggingFaceTB/SmolVLM-256M-Instruct HuggingFaceTB/SmolVLM-500M-Instruct"
#   start reads the SMOLKIT_HUB_* settings listed at the top of environment/jupyterhub_config.py;
#   SMOLKIT_HUB_CONFIG names another config file (one that load_subconfig()s this one and adds to it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
WORKSHOP=${SMOLKIT_WORKSHOP_DIR:-$HOME/smolkit-workshop}
CACHE=${SMOLKIT_WORKSHOP_CACHE:-$WORKSHOP/cache}
[ -x "$PY" ] || { echo "no venv at $VENV: run \`make setup\` first" >&2; exit 1; }

prepare() {
    echo "== the hub's proxy: configurable-http-proxy (environment/proxy/package-lock.json)"
    command -v npm >/dev/null || { echo "npm is missing: apt-get install -y npm (Node.js 20 or newer)" >&2; exit 1; }
    npm ci --prefix environment/proxy --no-audit --no-fund --loglevel=error

    echo "== the shared model cache: $CACHE"
    mkdir -p "$CACHE/hf" "$CACHE/smolkit"
    chmod -R u+w "$CACHE"
    SMOLKIT_CACHE_DIR="$CACHE/smolkit" "$PY" -m smolkit convert
    for model in ${SMOLKIT_WORKSHOP_MODELS:-}; do
        echo "== downloading $model into the shared cache"
        HF_HOME="$CACHE/hf" "$PY" -c 'import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1])' "$model"
    done
    # Read-only for everybody, the owner included: participants' kernels read it, nothing writes to it.
    chmod -R a-w,a+rX "$CACHE"
    echo "== ready: $(du -sh "$CACHE" | cut -f1) of models in $CACHE (read-only)"
}

start() {
    if [ "$(id -u)" = 0 ]; then
        echo "warning: the hub runs as root, so every participant's code runs as root too;" \
             "run \`start\` from an unprivileged account for a real workshop" >&2
    fi
    export SMOLKIT_WORKSHOP_DIR="$WORKSHOP" SMOLKIT_WORKSHOP_CACHE="$CACHE"
    exec "$VENV/bin/jupyterhub" -f "${SMOLKIT_HUB_CONFIG:-environment/jupyterhub_config.py}"
}

case "${1:-}" in
    prepare) prepare ;;
    start) start ;;
    *) echo "usage: $0 prepare|start" >&2; exit 2 ;;
esac
