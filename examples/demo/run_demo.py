"""`make demo`: train a small PET on a slice of the SCAN water/ice data for a few minutes, evaluate it on its
validation frames, export it to TorchScript and print where everything is."""

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=4.0, help="training time (default 4)")
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
    print(f"demo finished in {(time.time() - start) / 60:.1f} min")
    print(f"  exported model : {out / 'pet-water-demo.pt'}")
    print(f"  training run   : {out / 'run'} (metrics.csv, best.ckpt, last.ckpt)")
    print("  validation errors above are on the run's own validation frames (split.json)")


if __name__ == "__main__":
    main()
