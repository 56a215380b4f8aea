#!/usr/bin/env bash
# Here, after train-gpu.sh: put the state it sent back (FOLDER: the call's files) into runs/pet-water, checked
# against its SHA-256 sums. Stop any local training of runs/pet-water first: two runs must not write one state.
# Usage: tools/offline-gpu/collect.sh FOLDER
set -euo pipefail
cd "$(dirname "$0")/../.."
from=${1:?usage: collect.sh FOLDER}
if pgrep -f "petmd train .*-o runs/pet-water( |$)" > /dev/null; then
  echo "collect.sh: a local 'petmd train ... -o runs/pet-water' is running: stop it (it would overwrite the state)" >&2
  exit 2
fi
mkdir -p runs/pet-water  # a fresh checkout has none: the GPU call started a new run
tmp=$(mktemp -d runs/pet-water/.collect-XXXX)
states=$(awk '{print $2}' "$from"/SHA256SUMS)
for f in $states; do cat "$from"/$f.part-* > "$tmp"/$f; done
(cd "$tmp" && sha256sum -c --quiet "$from"/SHA256SUMS)
for f in $states; do mv "$tmp"/$f runs/pet-water/; done
rmdir "$tmp"
if [ -f "$from"/metrics.csv ]; then  # none where the call ended inside its first epoch
  cp "$from"/metrics.csv runs/pet-water/
  tail -3 runs/pet-water/metrics.csv
fi
