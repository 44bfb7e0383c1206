"""How many workshop participants this box holds within the budgets, and the SMOLKIT_HUB_MAX_USERS to set: the
facilitator's capacity planner (`workshop/workshop.sh capacity`).

It ramps the scripted participants of bench/workshop_load.py (each a kernel as the hub starts it) up through --n,
keeping the kernels already up and adding the next ones, plays --seconds at each step, and stops at the first N
over a budget (slider p95 > 50 ms, generate of 8 x 64 tokens p95 > 1 s) or with a failure. What it prints:
the largest N within both budgets, the next N tried (over), the GPU memory per kernel and how many kernels the
GPU's memory alone would allow, and, with MPS, how many kernels its server takes (bench/mps_clients.py: 48 on an
H100). A minute or two on a GPU with the default ramp (about 30 s per step).

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
import tempfile
import time
from pathlib import Path
from typing import Any

GPU_RAMP = "8,16,24,32,40,48"
CPU_RAMP = "1,2,4"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a ramp showed: ``holds`` participants within the budgets (0: not even the first step), ``over`` the
    first N that was not (None: every step held), why, and the GPU memory figures (None on the CPU)."""

    holds: int
    over: int | None
    why: str | None
    gb_per_kernel: float | None
    memory_allows: int | None
    mps_allows: int | None = None  # clients one MPS server takes on this GPU (measured; None: not limited, no MPS)

    @property
    def max_users(self) -> int:
        """SMOLKIT_HUB_MAX_USERS: what held, never more than the GPU's memory or its MPS server allows."""
        return min(n for n in (self.holds, self.memory_allows, self.mps_allows) if n is not None)


def plan(rows: list[dict[str, Any]], share_of_gpu: float = 0.85, mps_allows: int | None = None) -> Plan:
    """The plan from the ramp's rows (bench/workshop_load.py's, in ramp order): the last N before the first row
    with a ``first_failure``, and how many kernels of the measured size fit in ``share_of_gpu`` of the memory;
    ``mps_allows``, the MPS server's client limit where the hub shares the GPU through MPS (bench/mps_clients.py).

    >>> ok = {"first_failure": None, "gpu_gb_per_kernel": 1.8, "gpu_total_gb": 80.0}
    >>> plan([{**ok, "n": 8}, {**ok, "n": 16}, {**ok, "n": 24, "first_failure": "generate p95 1.40 s > 1 s"}])
    Plan(holds=16, over=24, why='generate p95 1.40 s > 1 s', gb_per_kernel=1.8, memory_allows=37, mps_allows=None)
    """
    holds, over, why = 0, None, None
    for row in rows:
        if row["first_failure"]:
            over, why = row["n"], row["first_failure"]
            break
        holds = row["n"]
    sizes = [r["gpu_gb_per_kernel"] for r in rows if r.get("gpu_gb_per_kernel")]
    totals = [r["gpu_total_gb"] for r in rows if r.get("gpu_total_gb")]
    per_kernel = max(sizes) if sizes else None
    allows = math.floor(share_of_gpu * totals[0] / per_kernel) if per_kernel and totals else None
    return Plan(holds, over, why, per_kernel, allows, mps_allows)


def verdict(p: Plan, device: str) -> str:
    """The facilitator's answer, in words.

    >>> print(verdict(Plan(16, 24, "generate p95 1.40 s > 1 s", 1.8, 37), "NVIDIA H100 80GB HBM3"))
    NVIDIA H100 80GB HBM3 holds 16 participants within the budgets (at 24: generate p95 1.40 s > 1 s).
    GPU memory: 1.80 GB per kernel with its CUDA context; the memory alone would allow 37.
    Set SMOLKIT_HUB_MAX_USERS=16 (workshop/workshop.sh start reads it).
    """
    if p.over is None:
        held = f"holds at least {p.holds} participants within the budgets (every step of the ramp held: try more)"
    elif p.holds == 0:
        held = f"holds no participant within the budgets (at {p.over}: {p.why})"
    else:
        held = f"holds {p.holds} participants within the budgets (at {p.over}: {p.why})"
    lines = [f"{device} {held}."]
    if p.gb_per_kernel is not None:
        lines.append(f"GPU memory: {p.gb_per_kernel:.2f} GB per kernel with its CUDA context; the memory alone "
                     f"would allow {p.memory_allows}.")  # fmt: skip
    if p.mps_allows is not None:
        lines.append(f"MPS: one server takes {p.mps_allows} kernels on this GPU (measured), the next is refused; "
                     "every open notebook is one.")  # fmt: skip
    if p.max_users > 0:
        lines.append(f"Set SMOLKIT_HUB_MAX_USERS={p.max_users} (workshop/workshop.sh start reads it).")
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
