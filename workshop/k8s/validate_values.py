"""Check workshop/k8s/values.yaml against a Zero to JupyterHub chart's own schema, as Helm does on install: the
chart's defaults overlaid with ours, validated with the chart's values.schema.json (or .yaml, in its git repository).

    helm pull jupyterhub --repo https://hub.jupyter.org/helm-chart/ --version 4.4.0 --untar --untardir /tmp/z2jh
    python workshop/k8s/validate_values.py --chart /tmp/z2jh/jupyterhub

(`helm template smolkit /tmp/z2jh/jupyterhub --values workshop/k8s/values.yaml` runs the same check and renders
the manifests.) Needs PyYAML and jsonschema, which the project's venv has.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

VALUES = Path(__file__).with_name("values.yaml")


def overlay(defaults: Any, ours: Any) -> Any:
    """Helm's merge of values: mappings merge key by key, anything else in ``ours`` replaces the default."""
    if isinstance(defaults, dict) and isinstance(ours, dict):
        return {**defaults, **{k: overlay(defaults.get(k), v) for k, v in ours.items()}}
    return ours


def schema_of(chart: Path) -> dict[str, Any]:
    for name, load in (("values.schema.json", json.loads), ("values.schema.yaml", yaml.safe_load)):
        if (chart / name).is_file():
            return load((chart / name).read_text())
    raise SystemExit(f"{chart} holds no values.schema.json or values.schema.yaml: is it the chart's folder?")


def problems(chart: Path, values: Path = VALUES) -> list[str]:
    """Every place where ``values`` over the chart's defaults breaks the chart's schema ([] when none)."""
    merged = overlay(yaml.safe_load((chart / "values.yaml").read_text()), yaml.safe_load(values.read_text()))
    validator = jsonschema.Draft7Validator(schema_of(chart))
    return [f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in validator.iter_errors(merged)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chart", type=Path, required=True, help="the chart's folder (values.yaml beside its schema)")
    parser.add_argument("--values", type=Path, default=VALUES)
    args = parser.parse_args(argv)
    found = problems(args.chart, args.values)
    for problem in found:
        print(problem, file=sys.stderr)
    print(f"{args.values}: {'valid' if not found else f'{len(found)} problem(s)'} for the chart in {args.chart}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
