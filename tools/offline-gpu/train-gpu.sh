#!/usr/bin/env bash
# One call on a GPU machine: continue the shipped model's training (runs/pet-water with the config it was started
# with, or a new run from the shipped weights models/pet-water.ckpt with models/pet-water-continue.yaml where no
# state travelled) for SECONDS, then put the new
# state into OUT in pieces under 16 MB (SHA256SUMS, last.ckpt.part-*, best.ckpt.part-* if it improved, metrics.csv,
# train.log);
# tools/offline-gpu/collect.sh puts them back into runs/pet-water here. The training section runs on cuda; the
# model, data, batch and schedule settings stay the run's (petmd refuses a resume that changes model or data).
# Usage: tools/offline-gpu/train-gpu.sh SECONDS OUT
set -uo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:?usage: train-gpu.sh SECONDS OUT}
out=${2:?usage: train-gpu.sh SECONDS OUT}
mkdir -p "$out"
venv=${PETMD_VENV:-/tmp/petmd-venv}
device=${PETMD_DEVICE:-cuda}  # cuda:N for another GPU (cpu only to try the script itself)
tools/offline-gpu/setup.sh train > "$out"/train.log 2>&1 || { tail -40 "$out"/train.log; exit 1; }
eval "$(tail -1 "$out"/train.log)"  # export PETMD_DATA=...
export PATH=$venv/bin:$PATH PYTHONUNBUFFERED=1 PETMD_DEVICE=$device
python - <<'PY'
import os, yaml
from petmd.checkpoint import load_checkpoint
# a resumed run keeps the config it was started with (its schedule's length, its averaging): it is in the state
state = "runs/pet-water/last.ckpt"
config = (load_checkpoint(state)["config"] if os.path.exists(state)
          else yaml.safe_load(open("models/pet-water-continue.yaml")))
config["data"]["path"] = ""  # $PETMD_DATA, the data unpacked on this machine
# the device's own chunk default: the config's chunk size is the one measured best on the 2-core CPU
config["training"].update(device=os.environ["PETMD_DEVICE"], num_threads=None, chunk_atoms=-1)
yaml.safe_dump(config, open("runs/pet-water-gpu.yaml", "w"), sort_keys=False)
PY
# the run's own full state when it travelled (pack.sh train), else a new run from the shipped weights
start="--init models/pet-water.ckpt"
if [ -f runs/pet-water/last.ckpt ]; then start=--resume; fi
petmd train runs/pet-water-gpu.yaml -o runs/pet-water $start --max-time "$seconds" --no-progress >> "$out"/train.log 2>&1
status=$?
tail -25 "$out"/train.log
# best.ckpt exists only where this call's validation beat the state it started from
cd runs/pet-water
states=$(ls last.ckpt best.ckpt 2>/dev/null)
sha256sum $states > "$out"/SHA256SUMS
for f in $states; do split -b 15M $f "$out"/$f.part-; done
if [ -f metrics.csv ]; then cp metrics.csv "$out"/; fi  # written at the end of an epoch
exit $status
