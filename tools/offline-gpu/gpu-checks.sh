#!/usr/bin/env bash
# One call on a GPU machine (about 6 minutes): set up (setup.sh build), run the GPU tests, and take the GPU figures
# of docs/benchmarks.md: the bare model in TF32 (with TF32's deviation, up to 331,776 atoms) and float32, pair_style
# pet on the GPU in both, chunk sizes. The steps run in the order of what they are worth, each under its own time
# limit, so one that hangs, or a deadline for all of them (PETMD_CHECKS_DEADLINE), costs only the figures after it. Logs and JSON go to OUT.
#   Usage: tools/offline-gpu/gpu-checks.sh OUT
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: gpu-checks.sh OUT}
mkdir -p "$out"
venv=${PETMD_VENV:-/tmp/petmd-venv}
device=${PETMD_DEVICE:-cuda}  # cuda:N for another GPU (cpu only to try the script itself)
# PETMD_CHECKS_DEADLINE (seconds since the epoch, as date +%s) ends every step by then, and skips those after it
deadline=${PETMD_CHECKS_DEADLINE:-}
step() {
  local name=$1 limit=$2
  shift 2
  if [ -n "$deadline" ] && [ $(( deadline - $(date +%s) )) -lt "$limit" ]; then limit=$(( deadline - $(date +%s) )); fi
  if [ "$limit" -lt 5 ]; then echo "== $name: skipped (PETMD_CHECKS_DEADLINE reached)"; return 124; fi
  echo "== $name ($(date +%T), at most $limit s)"
  timeout "$limit" "$@"
}
step "set-up" 240 tools/offline-gpu/setup.sh build > "$out"/setup.log 2>&1 || { tail -40 "$out"/setup.log; exit 1; }
tail -1 "$out"/setup.log
export PATH=$venv/bin:$PATH PYTHONUNBUFFERED=1 PETMD_DATA=$PWD/.offline/kit/water-frame.extxyz
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1
step "tests" 150 env PETMD_TEST_DEVICE="$device" python -m pytest -q -p no:cacheprovider \
  tests/test_gpu.py tests/test_bridge.py 2>&1 | tail -15
# a model file is exported by the torch that runs it: a file of a newer torch may not load in an older one
petmd export models/pet-water.ckpt -o /tmp/pet-water.pt --dtype float32 || exit 1
bench() { python benchmarks/"$@" --model /tmp/pet-water.pt --device "$device"; }
step "bare model, TF32" 120 bench inference_efficiency.py --tf32 --sizes 12288 98304 331776 \
  --json "$out"/bare-tf32.json 2>&1 | grep -v "^$"
step "pair_style pet on the GPU, TF32" 120 bench lammps_throughput.py --tf32 --sizes 12288 98304 --steps 5 \
  --warmup 1 --skip-ase --json "$out"/lammps-tf32.json 2>&1 | tail -9
step "bare model, float32" 80 bench inference_efficiency.py --sizes 1536 12288 98304 \
  --json "$out"/bare-fp32.json 2>&1 | grep -v "^$"
step "pair_style pet on the GPU, float32" 100 bench lammps_throughput.py --sizes 12288 98304 --steps 5 --warmup 1 \
  --skip-ase --json "$out"/lammps-fp32.json 2>&1 | tail -9
step "chunk sizes, TF32" 60 bench inference_efficiency.py --tf32 --sizes 12288 --chunks 1024 16384 0 \
  --json "$out"/chunks-tf32.json 2>&1 | grep -v "^$"
