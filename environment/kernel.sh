#!/usr/bin/env bash
# Register the project venv as the Jupyter kernel "smolkit" (inside the venv: --sys-prefix, no user-wide change).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/python" -m ipykernel install --sys-prefix --name smolkit --display-name "Python (smolkit)" >/dev/null
echo "kernel 'smolkit' registered in $VENV/share/jupyter/kernels/smolkit"
