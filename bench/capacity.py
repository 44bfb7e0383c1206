"""How many workshop participants this box holds within the budgets, and the SMOLKIT_HUB_MAX_USERS (and
SMOLKIT_HUB_GPU_CONTEXT_GB) to set: the facilitator's capacity planner (`workshop/workshop.sh capacity`).

It ramps the scripted participants of bench/workshop_load.py (each a kernel as the hub starts it, with the hub's
split of the GPU for that step's N: seats and shares, workshop/gpu_split.py) up through --n, keeping the kernels
already up and adding the next ones, plays --seconds at each step, and stops at the first N over a budget (slider
p95 > 50 ms, generate of 8 x 64 tokens p95 > 1 s) or with a failure. What it prints: the largest N within both
budgets, the next N tried (over), what a kernel holds in torch and besides (its context), how many kernels the
GPU's memory holds with that room each, and, with MPS, how many kernels its server takes (bench/mps_clients.py: 48
on an H100). About 30 s per step on a GPU (ramp 24,32,36,40 as the hub runs kernels: 237 s on an H100).

    python bench/capacity.py                        # this GPU, the hub's settings (plain tier)
    python bench/capacity.py --n 8,16,24,32,40,48   # another ramp; --variant plain+mps with MPS running
    python bench/capacity.py --device cpu --n 1,2,4 # this CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workshop"))
import gpu_split

GB = gpu_split.GB

GPU_RAMP = "8,16,24,32,40,48"
CPU_RAMP = "1,2,4"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a ramp showed: ``holds`` participants within the budgets (0: not even the first step), ``over`` the
    first N that was not (None: every step held), why, and the GPU memory figures (None on the CPU): what a kernel's
    torch held at most and what it holds besides (its context), and how many kernels the memory holds so split."""

    holds: int
    over: int | None
    why: str | None
    torch_gb: float | None
    context_gb: float | None
    memory_allows: int | None
    mps_allows: int | None = None  # clients one MPS server takes on this GPU (measured; None: not limited, no MPS)

    @property
    def max_users(self) -> int:
        """SMOLKIT_HUB_MAX_USERS: what held, never more than the GPU's memory or its MPS server allows."""
        return min(n for n in (self.holds, self.memory_allows, self.mps_allows) if n is not None)

    @property
    def context_setting(self) -> float | None:
        """SMOLKIT_HUB_GPU_CONTEXT_GB: the measured context, rounded up to 0.1 GB (None on the CPU)."""
        return None if self.context_gb is None else math.ceil(self.context_gb * 10 - 1e-9) / 10


def plan(rows: list[dict[str, Any]], mps_allows: int | None = None) -> Plan:
    """The plan from the ramp's rows (bench/workshop_load.py's, in ramp order): the last N before the first row
    with a ``first_failure``, and how many kernels the GPU holds when each keeps room for what a kernel's torch held
    at most plus its context (workshop/gpu_split.py's seats_allowed); ``mps_allows``, the MPS server's client limit
    where the hub shares the GPU through MPS (bench/mps_clients.py).

    >>> ok = {"first_failure": None, "reserved_gb_per_kernel": 0.94, "context_gb_per_kernel": 0.9, "gpu_total_gb": 85}
    >>> plan([{**ok, "n": 8}, {**ok, "n": 16}, {**ok, "n": 24, "first_failure": "generate p95 1.40 s > 1 s"}])
    Plan(holds=16, over=24, why='generate p95 1.40 s > 1 s', torch_gb=0.94, context_gb=0.9, memory_allows=36, \
mps_allows=None)
    """
    holds, over, why = 0, None, None
    for row in rows:
        if row["first_failure"]:
            over, why = row["n"], row["first_failure"]
            break
        holds = row["n"]
    torch_gb = max((r["reserved_gb_per_kernel"] for r in rows if r.get("reserved_gb_per_kernel")), default=None)
    context_gb = max((r["context_gb_per_kernel"] for r in rows if r.get("context_gb_per_kernel")), default=None)
    total_gb = next((r["gpu_total_gb"] for r in rows if r.get("gpu_total_gb")), None)
    allows = None
    if None not in (torch_gb, context_gb, total_gb):
        allows = gpu_split.seats_allowed(total_gb * GB, torch_gb * GB, context_gb * GB)
    return Plan(holds, over, why, torch_gb, context_gb, allows, mps_allows)


def verdict(p: Plan, device: str) -> str:
    """The facilitator's answer, in words.

    >>> print(verdict(Plan(16, 24, "generate p95 1.40 s > 1 s", 0.94, 0.9, 36),
    ...               "NVIDIA H100 80GB HBM3"))  # doctest: +NORMALIZE_WHITESPACE
    NVIDIA H100 80GB HBM3 holds 16 participants within the budgets (at 24: generate p95 1.40 s > 1 s).
    GPU memory: a kernel's torch held 0.94 GB at most, and it holds 0.90 GB besides (its CUDA context); with room
    for 1.25 times the first, the GPU holds 36 kernels.
    Set SMOLKIT_HUB_MAX_USERS=16 SMOLKIT_HUB_GPU_CONTEXT_GB=0.9 (workshop/workshop.sh start reads them).
    """
    if p.over is None:
        held = f"holds at least {p.holds} participants within the budgets (every step of the ramp held: try more)"
    elif p.holds == 0:
        held = f"holds no participant within the budgets (at {p.over}: {p.why})"
    else:
        held = f"holds {p.holds} participants within the budgets (at {p.over}: {p.why})"
    lines = [f"{device} {held}."]
    if p.memory_allows is not None:
        lines.append(f"GPU memory: a kernel's torch held {p.torch_gb:.2f} GB at most, and it holds {p.context_gb:.2f} "
                     f"GB besides (its CUDA context); with room for {gpu_split.HEADROOM:g} times the first, the GPU "
                     f"holds {p.memory_allows} kernels.")  # fmt: skip
    if p.mps_allows is not None:
        lines.append(f"MPS: one server takes {p.mps_allows} kernels on this GPU (measured), the next is refused; "
                     "every open notebook is one.")  # fmt: skip
    if p.max_users > 0:
        context = f" SMOLKIT_HUB_GPU_CONTEXT_GB={p.context_setting:g}" if p.context_setting is not None else ""
        lines.append(f"Set SMOLKIT_HUB_MAX_USERS={p.max_users}{context} (workshop/workshop.sh start reads "
                     f"{'them' if context else 'it'}).")  # fmt: skip
    else:
        lines.append("Do not run a workshop on this box as it is: give participants a GPU each, or fewer tokens.")
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str, dict[str, Any] | None]:
    """Ramp the scripted participants (workshop_load.ramp) until the first step over budget; the rows, the
    device's name and, where the variant shares the GPU through MPS, its client limit (``mps_limit``)."""
    import workshop_load  # bench/ is this script's own directory: the load test's kernels and figures

    workshop_load.exit_on_sigterm()

    load = workshop_load.parse([
        "--device", args.device, "--n", args.n, "--seconds", str(args.seconds), "--variants", args.variant,
        "--samples", str(args.samples), "--tokens", str(args.tokens),
        "--slider-budget-ms", str(args.slider_budget_ms), "--generate-budget-s", str(args.generate_budget_s),
    ])  # fmt: skip
    scratch = Path(tempfile.mkdtemp(prefix="smolkit-capacity-"))
    load.compile_cache, rows = scratch / "inductor", []
    try:
        first = workshop_load.warm_up(load, scratch)
        print(f"first kernel alone: {first['elapsed_s']:.1f} s on {first['gpu'] or 'CPU'}", flush=True)
        for row in workshop_load.ramp(load.n, load.variants[0], load, scratch):
            rows.append(row)
            print(workshop_load.table([row]).splitlines()[-1], flush=True)
            if row["first_failure"]:
                break
        mps = mps_limit(args) if "mps" in args.variant.split("+") else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows, first["gpu"] or "this CPU", mps


def mps_limit(args: argparse.Namespace) -> dict[str, Any]:
    """How many kernels one MPS server takes here (bench/mps_clients.py, up to 64 contexts, about half a minute),
    with its daemon in the mode the variant runs (multi-user with accounts, as the hub)."""
    import mps_clients

    probe = ["--most", "64", "--stop-after", "1"] + (["--multiuser"] if "accounts" in args.variant else [])
    result = mps_clients.measure(mps_clients.parse(probe))
    print(f"MPS clients: {result['limit'] or 'at least 64'} got a context", flush=True)
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--n", default=None, help=f"the ramp (default {GPU_RAMP} on a GPU, {CPU_RAMP} on the CPU)")
    p.add_argument("--seconds", type=float, default=20, help="seconds each step plays (default 20)")
    p.add_argument("--variant", default="plain",
                   help="the remedies the hub runs (bench/workshop_load.py --variants; default plain: the hub sets\n"
                        "SMOLKIT_COMPILE_AFTER_S=never)")  # fmt: skip
    p.add_argument("--samples", type=int, default=8, help="continuations per generate (the budget's 8)")
    p.add_argument("--tokens", type=int, default=64, help="tokens per continuation (the budget's 64)")
    p.add_argument("--slider-budget-ms", type=float, default=50)
    p.add_argument("--generate-budget-s", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=None, help="write the rows and the plan as JSON here")
    args = p.parse_args(argv)
    if args.n is None:
        import torch

        args.n = CPU_RAMP if args.device == "cpu" or not torch.cuda.is_available() else GPU_RAMP
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    rows, device, mps = measure(args)
    result = plan(rows, mps_allows=mps["limit"] if mps else None)
    print(f"\n{verdict(result, device)}\n(measured in {time.perf_counter() - started:.0f} s: ramp {args.n}, "
          f"{args.seconds:g} s a step, variant {args.variant})")  # fmt: skip
    if args.out:
        record = {"device": device, "settings": vars(args), "rows": rows, "plan": dataclasses.asdict(result),
                  "max_users": result.max_users, "mps_clients": mps}  # fmt: skip
        args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
