#!/usr/bin/env bash
# The GPU measurements of bench/RESULTS.md, on a machine with CUDA and the machine's own python3 (no venv), in
# stages that fit one call each of a lent machine. Source bench/device_env.sh first where packages are missing.
#
#   bench/gpu_run.sh tests      make test-gpu's first half: the -m gpu tests (fast path parity, chi-square, share)
#   bench/gpu_run.sh trust      bench/gpu_trust.py: plotted vs sampled, float32 and bfloat16
#   bench/gpu_run.sh bench      bench/bench_gpu.py (both tiers beside transformers' paths) and profile_fastpath.py
#   bench/gpu_run.sh startup    bench/profile_startup.py: a fresh process stage by stage, to the first tokens
#   bench/gpu_run.sh notebooks  make test-gpu's second half: every notebook under nbval-lax on the GPU
#   bench/gpu_run.sh workshop   bench/workshop_load.py: how many participants one GPU holds
#   bench/gpu_run.sh hub        the hub's own case for 5 minutes (as root): 32 kernels, each a system account of its
#                               own, sharing the GPU through one MPS server in multi-user mode (-M), as the hub runs it,
#                               the GPU split into the planner's seats (results-capacity-hub.json, else 32)
#   bench/gpu_run.sh late       overload as a workshop meets it: 32 kernels up under MPS, 16 more arrive while they play,
#                               the GPU split into the planner's seats: past them, newcomers find none
#   bench/gpu_run.sh late-spread  the same, the 16 arriving one a second instead of at once
#   bench/gpu_run.sh timeslice  32 kernels time-sharing the GPU without MPS: the plain tier beside the compiled one
#   bench/gpu_run.sh capacity   the capacity planner as the hub runs (as root): accounts and MPS, 24 / 32 / 36 / 40
#   bench/gpu_run.sh mps-clients  how many clients one MPS server (multi-user) takes, and what the next one meets
# Logs and JSON go to ${OUT:-bench/gpu-out}. SMOLKIT_BENCH_GPU_MIB=81559 (an H100 80GB's total) on a bigger GPU: a
# process holds the memory above that figure while the stages run, so that overload stages meet the memory of the
# GPU named (compute and bandwidth stay the bigger GPU's: say so beside any figure).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
py=${PYTHON:-python3}
stage() { local name=$1; shift; echo "== $name: $*"; local t0=$SECONDS; "$@" 2>&1 | tee "$out/$name.log"; local rc=${PIPESTATUS[0]}; echo "== $name: exit $rc in $((SECONDS - t0)) s"; }
ballast() {  # leave as much GPU memory free as a GPU of $1 MiB total would have; held until this script exits
    local used; used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)
    "$py" - "$1" "$used" <<'PY' &
import sys, time, torch
free, total = torch.cuda.mem_get_info()  # after this process's own CUDA context
want_free = (int(sys.argv[1]) - int(sys.argv[2])) * 2**20  # that total, less what was used before this process
held = torch.empty(max(free - want_free, 0), dtype=torch.uint8, device="cuda")
print(f"ballast: holding {held.numel() >> 20} MiB of {total >> 20}; free {torch.cuda.mem_get_info()[0] >> 20} MiB",
      flush=True)
time.sleep(1e9)
PY
    ballast_pid=$!; trap 'kill $ballast_pid 2>/dev/null' EXIT; sleep 20
}
fresh() { local n=1; while [ -e "$1-$n.json" ]; do n=$((n + 1)); done; echo "$1-$n.json"; }  # runs side by side
planned() {  # the seats (SMOLKIT_HUB_MAX_USERS) the capacity stage's plan gives, else $SMOLKIT_BENCH_SEATS, else 32
    "$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["max_users"])' "$out/results-capacity-hub.json" \
        2>/dev/null || echo "${SMOLKIT_BENCH_SEATS:-32}"
}
seats=$(planned)  # hub, late: the hub split as the planner says (a capacity stage before them in this call: its plan)
[ -n "${SMOLKIT_BENCH_GPU_MIB:-}" ] && ballast "$SMOLKIT_BENCH_GPU_MIB"
for what in "$@"; do
    case "$what" in
        tests) stage tests "$py" -m pytest -q -p no:cacheprovider -o addopts= -m gpu --continue-on-collection-errors tests ;;
        trust) stage trust "$py" bench/gpu_trust.py --out "$out/results-gpu-trust.json" ;;
        bench)
            stage bench "$py" bench/bench_gpu.py --weights embedded --static --out "$out/results-gpu.json"
            stage profile "$py" bench/profile_fastpath.py --quick --no-fused ;;
        startup) stage startup "$py" bench/profile_startup.py --out "$out/results-gpu-startup.json" ;;
        notebooks)
            stage notebooks "$py" -m pytest -q -p no:cacheprovider -o addopts= --nbval-lax --nbval-kernel-name smolkit \
                --nbval-cell-timeout 900 --durations=0 notebooks ;;
        workshop) stage workshop "$py" bench/workshop_load.py --out "$out/results-workshop-gpu.json" ;;
        hub) stage hub "$py" bench/workshop_load.py --n 32 --seats "$seats" --seconds 300 --startup-timeout 90 \
                --generate-timeout 30 --keep-going --variants plain+mps+accounts --out "$out/results-workshop-hub.json" ;;
        late) stage late "$py" bench/workshop_load.py --n 48 --overload --overload-after 32 --seats "$seats" \
                --startup-timeout 150 --seconds 20 --variants plain+mps --out "$(fresh "$out/results-workshop-late")" ;;
        late-spread) stage late-spread "$py" bench/workshop_load.py --n 48 --overload --overload-after 32 \
                --seats "$seats" --arrive-every 1 --startup-timeout 150 --seconds 20 --variants plain+mps \
                --out "$(fresh "$out/results-workshop-late-spread")" ;;
        timeslice) stage timeslice "$py" bench/workshop_load.py --n 32 --seconds 30 --keep-going \
                --variants plain,compiled --out "$out/results-workshop-timeslice.json" ;;
        capacity) stage capacity "$py" bench/capacity.py --variant plain+mps+accounts --n 24,32,36,40 --seconds 20 \
                --out "$out/results-capacity-hub.json"
            seats=$(planned) ;;
        mps-clients) stage mps-clients "$py" bench/mps_clients.py --most 64 --multiuser \
                --out "$out/results-mps-clients.json" ;;
        *) echo "unknown stage $what" >&2; exit 2 ;;
    esac
done
