"""How many clients one MPS server takes on this GPU, and what the next one meets: told, or left waiting?

A workshop past capacity showed newcomers that neither worked nor got the kit's message: alive, silent, their logs
ending before the kit's first GPU work (bench/RESULTS.md, "late arrivals"). This probe asks the question without
the model: CUDA processes (torch and the kit, no model) are started at once, each imports them and waits; then,
one after another, each is told to create its CUDA context (a one-element tensor on the GPU, inside the kit's
translation of GPU errors, as load_model creates it) and hold it, as a participant's kernel holds its own. It
records how long each took, the first that did not answer within --timeout seconds (and its Python stack, which
faulthandler prints on SIGUSR1), what the refused ones were told, the MPS daemon's own count of clients, and
whether a waiting one goes on once a client exits. It runs a private MPS control daemon, started as the hub starts
its own (workshop/mps_service.py, through bench/workshop_load.py), in multi-user mode with --multiuser (as root, as
the hub runs it). On an H100 (2026-12-07): 48 clients, and the 49th is refused at once (bench/RESULTS.md).

    python3 bench/mps_clients.py --most 64 --out bench/results-mps-clients.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import workshop_load  # bench/ is this script's own directory: its MPS daemon and the daemon's client list

CLIENT = """
import faulthandler, json, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)
import torch
from smolkit.gpu_share import out_of_memory
print(json.dumps({"event": "imported"}), flush=True)
sys.stdin.readline()
started = time.perf_counter()
try:
    with out_of_memory(torch.device("cuda")):  # as the kit's load_model does: what a refused kernel is told
        torch.ones(1, device="cuda").add_(1)
    torch.cuda.synchronize()
    print(json.dumps({"event": "ready", "s": time.perf_counter() - started}), flush=True)
except Exception as err:
    print(json.dumps({"event": "error", "type": type(err).__name__, "message": str(err)[:500]}), flush=True)
sys.stdin.read()
"""


def start(count: int, env: dict[str, str], scratch: Path, first: int = 0) -> list[dict]:
    """``count`` client processes (numbered from ``first``), each with a log (its stderr) and a reader of its JSON
    lines."""
    clients = []
    for index in range(first, first + count):
        log_path = scratch / f"client-{index}.log"
        log = open(log_path, "w")  # noqa: SIM115 (closed by workshop_load.stop_kernels)
        proc = subprocess.Popen([sys.executable, "-c", CLIENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, text=True, env=env, start_new_session=True)  # fmt: skip
        client = {"index": index, "proc": proc, "log": log, "log_path": log_path, "events": {}}
        clients.append(workshop_load.start_reader(client))
    return clients


def probe(args: argparse.Namespace, env: dict[str, str], scratch: Path) -> dict:
    clients = start(args.most, env, scratch)
    rows, waiting = [], []
    try:
        for client in clients:
            if workshop_load.wait_event(client, "imported", 120) is None:
                raise RuntimeError(f"client {client['index']} did not import torch: "
                                   f"{workshop_load.log_tail(client['log_path'])}")  # fmt: skip
        for client in clients:
            workshop_load.send(client, "go")
            answer = workshop_load.wait_event(client, "ready", args.timeout)
            rows.append({"client": client["index"], **(answer or {"event": "no answer"})})
            print(f"  client {client['index']}: {rows[-1]}", flush=True)
            if answer is None:
                waiting.append(client)
                rows[-1]["stack"] = workshop_load.stack_of(client)  # faulthandler, on SIGUSR1, into its log
                if len(waiting) == args.stop_after:
                    break
        result = {"rows": rows, "limit": limit(rows), "mps": workshop_load.mps_clients(env)}
        ready = [c for c in clients if c["events"].get("ready")]
        if waiting and ready:  # does the first one waiting go on when a client that holds its context exits?
            first_ready = ready[0]
            first_ready["proc"].kill()
            answer = workshop_load.wait_event(waiting[0], "ready", args.timeout)
            result["after_one_exits"] = answer or {"event": "no answer"}
            print(f"  client {first_ready['index']} exited; client {waiting[0]['index']}: "
                  f"{result['after_one_exits']}", flush=True)  # fmt: skip
        elif ready and any(row["event"] == "error" for row in rows):  # refused: is a seat free once one exits?
            ready[0]["proc"].kill()
            ready[0]["proc"].wait(timeout=30)
            clients += start(1, env, scratch, first=len(clients))
            if workshop_load.wait_event(clients[-1], "imported", 120) is not None:
                workshop_load.send(clients[-1], "go")
            answer = workshop_load.wait_event(clients[-1], "ready", args.timeout)
            result["new_client_after_one_exits"] = answer or {"event": "no answer"}
            print(f"  client {ready[0]['index']} exited; a new client: {result['new_client_after_one_exits']}",
                  flush=True)  # fmt: skip
        return result
    finally:
        workshop_load.stop_kernels(clients)


def limit(rows: list[dict]) -> int | None:
    """How many clients got their context before the first that did not (refused, or no answer); None when every
    client started got one (the limit, if any, is higher).

    >>> limit([{"event": "ready"}, {"event": "ready"}, {"event": "error"}, {"event": "error"}])
    2
    >>> limit([{"event": "ready"}])
    """
    return next((i for i, row in enumerate(rows) if row["event"] != "ready"), None)


def measure(args: argparse.Namespace) -> dict:
    """The probe, with a private control daemon of its own (multi-user with ``args.multiuser``)."""
    with tempfile.TemporaryDirectory(prefix="mps-clients-") as tmp, \
            workshop_load.mps_daemon(Path(tmp), multiuser=args.multiuser) as mps:  # fmt: skip
        return probe(args, {**os.environ, **mps}, Path(tmp))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--most", type=int, default=64, help="clients to start (default 64)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a client may take for its context")
    p.add_argument("--stop-after", type=int, default=2, help="stop after this many clients gave no answer")
    p.add_argument("--multiuser", action="store_true", help="the daemon in multi-user mode (-M, root only)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    for name in ("most", "stop_after"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.timeout <= 0:
        p.error(f"--timeout must be positive, got {args.timeout}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    workshop_load.exit_on_sigterm()
    result = measure(args)
    result["settings"] = {**vars(args), "out": str(args.out), "gpu": workshop_load.gpu_name()}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2, default=str))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
