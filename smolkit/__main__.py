"""Command line: ``python -m smolkit doctor | convert | generate "prompt" [--temperature ...]``."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from smolkit import _checks
from smolkit.params import SamplingParams


def _params_parser(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(SamplingParams):
        if field.name == "stop_token_ids":
            parser.add_argument("--stop-token-ids", type=int, nargs="*", default=[])
        elif field.name == "do_sample":
            parser.add_argument("--greedy", action="store_true", help="do_sample=False")
        else:
            kind = float if field.type in ("float", float) else int
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=field.default)


def _convert(force: bool) -> int:
    """Convert the embedded model when its cache is unusable (every digest checked) or ``force``; remove what
    interrupted conversions left. A cache that cannot be written is one line on stderr and exit status 2."""
    from smolkit import embedded

    try:
        folder = embedded.embedded_cache_path()
        if force or embedded.cache_problem(folder, full=True) is not None:
            embedded.convert_embedded(folder)
        removed = embedded.remove_leftovers(folder)
    except (embedded.CacheError, FileNotFoundError) as err:
        print(f"smolkit: {err}", file=sys.stderr)
        return 2
    if removed:
        print(f"removed {len(removed)} leftover(s) of interrupted conversions")
    print(f"embedded model cache: {folder}")
    if left := embedded.leftovers(folder):  # a read-only cache folder, or a conversion running now (its own)
        unwritable = embedded.write_problem(folder)
        why = unwritable or "a conversion is running now and they are its own"
        print(f"smolkit: {len(left)} leftover(s) of interrupted conversions not removed: {why}", file=sys.stderr)
        return 2 if unwritable else 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smolkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check Python, torch, CUDA, Jupyter and the models; non-zero exit on a problem")
    convert = sub.add_parser("convert", help="convert the embedded GGUF to the safetensors cache now")
    convert.add_argument("--force", action="store_true", help="rebuild even when the cache is sound")
    gen = sub.add_parser("generate", help="generate text with vLLM's sampling parameters")
    gen.add_argument("prompt")
    gen.add_argument("--model", default="embedded")
    gen.add_argument("--device", default="auto")
    gen.add_argument("--image", default=None)
    _params_parser(gen)
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from smolkit.doctor import doctor

        return 0 if doctor().ok else 1
    if args.command == "convert":
        return _convert(args.force)
    from smolkit.generation import generate
    from smolkit.models import load_model

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(SamplingParams) if hasattr(args, f.name)}
    values["do_sample"] = not args.greedy
    try:
        for name in ("prompt", "model", "device"):  # text from the terminal: a byte in another encoding is named
            _checks.text(name if name == "prompt" else f"--{name}", getattr(args, name))
        params = SamplingParams(**values)
        lm = load_model(args.model, device=args.device)
        result = generate(lm, args.prompt, params, image=args.image, progress=sys.stderr.isatty())
    except (ValueError, TypeError, OSError) as err:  # OSError: a missing file, a CacheError, a damaged download
        print(f"smolkit: {err}", file=sys.stderr)
        return 2
    for i, sample in enumerate(result.samples):
        prefix = f"[{i}] " if len(result.samples) > 1 else ""
        print(f"{prefix}{sample.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
