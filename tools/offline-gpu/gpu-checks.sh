#!/usr/bin/env bash
# One call on a GPU machine (~7 minutes, estimated: on an H200 the set-up took 1 min, the tests 1, the bare model
# 3; pair_style pet is not yet timed there): set up (setup.sh build), run the GPU tests, and take the GPU figures
# of docs/benchmarks.md: the bare model in TF32 (with TF32's deviation, up to 331,776 atoms) and float32, pair_style
# pet on the GPU in both, chunk sizes. The steps run in the order of what they are worth, each under its own time
# limit, so one that hangs, or a deadline for all of them (PETMD_CHECKS_DEADLINE), costs only the figures after it.
# Logs and JSON go to OUT.   Usage: tools/offline-gpu/gpu-checks.sh OUT
#   PETMD_CHECKS_DEADLINE  seconds since the epoch (date +%s): every step ends by then, those after it are skipped
#   PETMD_CHECKS_SIZES     the small, medium and largest system, 192·k³ atoms each (default "12288 98304 331776")
#   PETMD_DEVICE           cuda:N for another GPU; cpu to try the script itself (in float32: TF32 is CUDA's)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: gpu-checks.sh OUT}
mkdir -p "$out"
venv=${PETMD_VENV:-/tmp/petmd-venv}
device=${PETMD_DEVICE:-cuda}
read -r small medium largest <<< "${PETMD_CHECKS_SIZES:-12288 98304 331776}"
tf32=--tf32
if [ "$device" = cpu ]; then tf32=; fi
deadline=${PETMD_CHECKS_DEADLINE:-}
step() {  # step NAME SECONDS COMMAND...: a program (timeout runs no shell functions), ended after SECONDS
  local name=$1 limit=$2
  shift 2
  if [ -n "$deadline" ] && [ $(( deadline - $(date +%s) )) -lt "$limit" ]; then limit=$(( deadline - $(date +%s) )); fi
  if [ "$limit" -lt 5 ]; then echo "== $name: skipped (PETMD_CHECKS_DEADLINE reached)"; return 124; fi
  echo "== $name ($(date +%T), at most $limit s)"
  timeout "$limit" "$@"
}
echo "== set-up ($(date +%T))"
step "set-up" 240 tools/offline-gpu/setup.sh build > "$out"/setup.log 2>&1 || { tail -40 "$out"/setup.log; exit 1; }
tail -1 "$out"/setup.log
export PATH=$venv/bin:$PATH PYTHONUNBUFFERED=1 PETMD_DATA=$PWD/.offline/kit/water-frame.extxyz
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1
step "tests" 150 env PETMD_TEST_DEVICE="$device" python -m pytest -q -p no:cacheprovider \
  tests/test_gpu.py tests/test_bridge.py 2>&1 | tail -15
# a model file is exported by the torch that runs it: a file of a newer torch may not load in an older one
model=$(mktemp -d)/pet-water.pt
petmd export models/pet-water.ckpt -o $model --dtype float32 || exit 1
bare=(python benchmarks/inference_efficiency.py --model $model --device "$device")
lammps=(python benchmarks/lammps_throughput.py --model $model --device "$device" --skip-ase --steps 5 --warmup 1)
step "bare model${tf32:+, TF32}" 150 "${bare[@]}" $tf32 --sizes $small $medium $largest \
  --json "$out"/bare-tf32.json 2>&1 | grep -v "^$"
step "pair_style pet${tf32:+, TF32}" 150 "${lammps[@]}" $tf32 --sizes $small $medium \
  --json "$out"/lammps-tf32.json 2>&1 | tail -9
step "bare model, float32" 60 "${bare[@]}" --sizes $small $medium \
  --json "$out"/bare-fp32.json 2>&1 | grep -v "^$"
step "pair_style pet, float32" 100 "${lammps[@]}" --sizes $small $medium \
  --json "$out"/lammps-fp32.json 2>&1 | tail -9
step "chunk sizes${tf32:+, TF32}" 60 "${bare[@]}" $tf32 --sizes $small --chunks 1024 16384 0 \
  --json "$out"/chunks-tf32.json 2>&1 | grep -v "^$"
