#!/usr/bin/env bash
# Build llama-cpp-python (pinned in requirements-engines.txt) into a cached wheel, then install it and its server's
# dependencies into the venv. A second run reuses the wheel: no rebuild.
#
# llama-cpp-python ships a source distribution only; by default it compiles llama.cpp for the building CPU
# (-march=native). On this 2-core Intel Xeon that build (AVX-512, AMX) crashed with a segmentation fault in its
# first eval of the embedded GGUF (issue 26). The flags below build what runs on any x86-64 CPU since Haswell
# (Intel or AMD, with or without AVX-512): AVX2, FMA and F16C on; AVX-512 and AMX off. LLAVA_BUILD=OFF skips the
# multimodal library, which the kit never loads (llama_cpp imports it lazily).
#
#   VENV         the venv to install into, default .venv
#   WHEELS       the wheel cache, default ~/.cache/smolkit/wheels (outside the repo: a fresh clone reuses it)
#   BUILD_ONLY=1 build the wheel, install nothing
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
VERSION=$(sed -n 's/^llama-cpp-python==//p' requirements-engines.txt)
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
CMAKE_ARGS+=" -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF"
CMAKE_ARGS+=" -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF"
KEY=$(printf '%s %s' "$VERSION" "$CMAKE_ARGS" | sha256sum | cut -c1-12)
WHEELS=${WHEELS:-$HOME/.cache/smolkit/wheels}/llama-cpp-python-$VERSION-$KEY
export CMAKE_ARGS

if ! ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
    echo "== building llama-cpp-python $VERSION (portable: $CMAKE_ARGS) into $WHEELS; 15-30 min on 2 cores"
    mkdir -p "$WHEELS.tmp"
    start=$(date +%s)
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} nice -n 15 "$PY" -m pip wheel -q \
        --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$VERSION" -w "$WHEELS.tmp"
    echo "$(( $(date +%s) - start )) s on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" \
        > "$WHEELS.tmp/build-seconds.txt"
    rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"
    echo "== built in $(cat "$WHEELS/build-seconds.txt")"
fi
[ "${BUILD_ONLY:-}" = 1 ] && exit 0
"$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --find-links "$WHEELS" "llama-cpp-python==$VERSION"
"$PY" -m pip install -q --disable-pip-version-check -r requirements-engines.txt --find-links "$WHEELS"
