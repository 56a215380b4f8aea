#!/usr/bin/env bash
# One call on a GPU machine (under 10 minutes): set up (setup.sh build), run the GPU tests, and take the GPU
# figures of docs/benchmarks.md: the bare model in float32 and TF32 (with TF32's deviation), chunk sizes, the largest
# system, pair_style pet on the GPU. Logs and JSON go to OUT; each step has its own time limit, so one that hangs
# costs only its own figures.   Usage: tools/offline-gpu/gpu-checks.sh OUT
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: gpu-checks.sh OUT}
mkdir -p "$out"
venv=${PETMD_VENV:-/tmp/petmd-venv}
device=${PETMD_DEVICE:-cuda}  # cuda:N for another GPU (cpu only to try the script itself)
step() { echo "== $1 ($(date +%T))"; shift; timeout "$@"; }
step "set-up" 300 tools/offline-gpu/setup.sh build > "$out"/setup.log 2>&1 || { tail -40 "$out"/setup.log; exit 1; }
tail -1 "$out"/setup.log
export PATH=$venv/bin:$PATH PYTHONUNBUFFERED=1 PETMD_DATA=$PWD/.offline/kit/water-frame.extxyz
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
step "tests" 240 env PETMD_TEST_DEVICE="$device" python -m pytest -q -p no:cacheprovider \
  tests/test_gpu.py tests/test_bridge.py 2>&1 | tail -15
# a model file is exported by the torch that runs it: a file of a newer torch may not load in an older one
petmd export models/pet-water.ckpt -o /tmp/pet-water.pt --dtype float32 || exit 1
step "bare model, float32" 200 python benchmarks/inference_efficiency.py --model /tmp/pet-water.pt --device "$device" \
  --sizes 1536 12288 98304 --json "$out"/bare-fp32.json 2>&1 | grep -v "^$"
step "bare model, TF32" 200 python benchmarks/inference_efficiency.py --model /tmp/pet-water.pt --device "$device" --tf32 \
  --sizes 12288 98304 192000 --json "$out"/bare-tf32.json 2>&1 | grep -v "^$"
step "chunk sizes, TF32" 150 python benchmarks/inference_efficiency.py --model /tmp/pet-water.pt --device "$device" --tf32 \
  --sizes 12288 --chunks 1024 16384 0 --json "$out"/chunks-tf32.json 2>&1 | grep -v "^$"
step "pair_style pet on the GPU, TF32" 200 python benchmarks/lammps_throughput.py --model /tmp/pet-water.pt \
  --device "$device" --tf32 --sizes 12288 98304 --steps 5 --warmup 1 --skip-ase --json "$out"/lammps-tf32.json 2>&1 | tail -9
step "pair_style pet on the GPU, float32" 100 python benchmarks/lammps_throughput.py --model /tmp/pet-water.pt \
  --device "$device" --sizes 12288 --steps 5 --warmup 1 --skip-ase --json "$out"/lammps-fp32.json 2>&1 | tail -6
