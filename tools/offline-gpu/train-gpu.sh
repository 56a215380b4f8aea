#!/usr/bin/env bash
# One call on a GPU machine: continue the shipped model's training for SECONDS of wall time (set-up and packing
# included): runs/pet-water with the config it was started with, or, where no state travelled, a new run from the
# shipped weights models/pet-water.ckpt with models/pet-water-continue.yaml whose cosine is sized to the time there
# is (the epochs that fit at the rate of a short probe run), so that the schedule ends annealed rather than cut.
# On cuda the matrix products run in TF32 (training.tf32). The state comes back in OUT in at most 7 files (OUT's
# limit is 8): SHA256SUMS, last.ckpt.part-* (the full state, for a resume), best.ckpt.part-aa (weights only, where
# an epoch's validation improved: what is evaluated and shipped), metrics.csv, train.log;
# tools/offline-gpu/collect.sh puts them back into runs/pet-water here. The model, data and batch settings stay the
# run's (petmd refuses a resume that changes model or data).
# Usage: tools/offline-gpu/train-gpu.sh SECONDS OUT
set -uo pipefail
cd "$(dirname "$0")/../.."
began=$(date +%s)
seconds=${1:?usage: train-gpu.sh SECONDS OUT}
out=${2:?usage: train-gpu.sh SECONDS OUT}
mkdir -p "$out"
venv=${PETMD_VENV:-/tmp/petmd-venv}
device=${PETMD_DEVICE:-cuda}  # cuda:N for another GPU (cpu only to try the script itself)
left() { echo $(( seconds - ($(date +%s) - began) )); }
log=$out/train.log
tools/offline-gpu/setup.sh train > "$log" 2>&1 || { tail -40 "$log"; exit 1; }
eval "$(tail -1 "$log")"  # export PETMD_DATA=...
export PATH=$venv/bin:$PATH PYTHONUNBUFFERED=1 PETMD_DEVICE=$device
config=runs/pet-water-gpu.yaml
python - "$config" <<'PY' || exit 1
import os, sys, yaml
from petmd.checkpoint import load_checkpoint
# a resumed run keeps the config it was started with (its schedule's length, its averaging): it is in the state
state = "runs/pet-water/last.ckpt"
config = (load_checkpoint(state)["config"] if os.path.exists(state)
          else yaml.safe_load(open("models/pet-water-continue.yaml")))
config["data"]["path"] = ""  # $PETMD_DATA, the data unpacked on this machine
device = os.environ["PETMD_DEVICE"]
# the device's own chunk default: the config's chunk size is the one measured best on the 2-core CPU
config["training"].update(device=device, num_threads=None, chunk_atoms=-1, tf32=device.startswith("cuda"))
yaml.safe_dump(config, open(sys.argv[1], "w"), sort_keys=False)
PY
start="--init models/pet-water.ckpt"
startup=40  # seconds from petmd train's start to its first step: reading the data, building the model
if [ -f runs/pet-water/last.ckpt ]; then
  start=--resume
else
  probe_began=$(date +%s)
  probe_steps_s=15
  rm -rf /tmp/petmd-probe
  timeout $(( $(left) / 3 )) petmd train "$config" -o /tmp/petmd-probe $start --max-time $probe_steps_s \
    --no-progress --json > /tmp/petmd-probe.json 2>> "$log" \
    || { echo "train-gpu.sh: the probe run failed" | tee -a "$log"; exit 1; }
  startup=$(( $(date +%s) - probe_began - probe_steps_s ))
  python - "$config" /tmp/petmd-probe.json $startup $(left) <<'PY' 2>&1 | tee -a "$log"
import json, sys, yaml
config_path, probe_path, startup, left = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
probe = json.load(open(probe_path))
rate = probe["steady_train_atoms_per_s"]
# the run's loop gets what is left after its own start-up (as long as the probe's) and the packing; an epoch is its
# training at the probe's rate plus a validation (inference: taken at half that rate)
loop = left - startup - 20
epoch = probe["train_atoms_per_epoch"] / rate + probe["validation_atoms"] / (2 * rate)
config = yaml.safe_load(open(config_path))
config["training"]["epochs"] = epochs = max(1, int(loop / epoch)) if rate > 0 else 1  # NaN: one step in 15 s
yaml.safe_dump(config, open(config_path, "w"), sort_keys=False)
memory = f", peak {probe['peak_device_memory_mib']:,.0f} MiB" if "peak_device_memory_mib" in probe else ""
print(f"probe: {rate:,.0f} atoms/s after the first step{memory}, start-up {startup:.0f} s; an epoch ~{epoch:.0f} s, "
      f"{loop:.0f} s for the run: a {epochs}-epoch cosine")
PY
fi
petmd train "$config" -o runs/pet-water $start --max-time $(( $(left) - startup - 15 )) --no-progress >> "$log" 2>&1
status=$?
tail -25 "$log"
cd runs/pet-water
# best.ckpt exists only where this call's validation improved on the state it started from; it travels as weights
# only (8.5 MB instead of 34): the full state beside it is last.ckpt
if [ -f best.ckpt ]; then
  python -c "from petmd.checkpoint import load_checkpoint as l, save_weights_only as s; s(l('best.ckpt'), 'best.ckpt')"
fi
states=$(ls last.ckpt best.ckpt 2>/dev/null)
sha256sum $states > "$out"/SHA256SUMS
for f in $states; do split -b 15M $f "$out"/$f.part-; done
if [ -f metrics.csv ]; then cp metrics.csv "$out"/; fi  # written at the end of an epoch
exit $status
