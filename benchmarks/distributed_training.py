#!/usr/bin/env python
"""Data-parallel training throughput: `petmd train` in one process against `torchrun --nproc-per-node N` on the same
global batches (the model and batch of a config, default models/pet-water-small.yaml, on the first --frames frames
of the SCAN set), each process with cores/N threads. Prints atoms/s per process count and the efficiency: atoms/s
with N processes ÷ atoms/s with one, on the same cores (1.0: the processes cost nothing over threads).

    python benchmarks/distributed_training.py                    # 1 and 2 processes on this machine's cores
    python benchmarks/distributed_training.py --processes 1 2 4 --steps 12 --json

Each run takes --steps optimizer steps (--max-steps); the figure is the run's steady throughput (after its first
step, as `petmd train` reports it). Pause anything else on the cores first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from machine import available_cores, metadata  # noqa: E402  (benchmarks/machine.py)

ROOT = Path(__file__).resolve().parents[1]


def train(config: Path, out: Path, processes: int, steps: int, threads: int) -> dict:
    args = ["train", str(config), "-o", str(out), "--no-progress", "--json", "--max-steps", str(steps)]
    if processes == 1:
        command = [sys.executable, "-m", "petmd", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        command += ["-m", "petmd", *args]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    line = [text for text in result.stdout.splitlines() if text.startswith("{")][-1]
    return json.loads(line)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "models" / "pet-water-small.yaml")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--frames", type=int, default=60, help="first frames of the data set (default 60)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (default 8)")
    parser.add_argument(
        "--atoms-per-batch",
        type=int,
        default=1728,
        help="global batch (default 1728: two of the set's 864-atom frames, one per process with 2)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cores = available_cores()
    cfg = yaml.safe_load(args.config.read_text())
    cfg["data"]["max_frames"] = args.frames
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.processes:
            threads = max(1, cores // n)
            cfg["training"].update(
                num_threads=threads, checkpoint_every_s=10**6, epochs=1000, atoms_per_batch=args.atoms_per_batch
            )
            config = Path(tmp) / f"config-{n}.yaml"
            config.write_text(yaml.safe_dump(cfg))
            result = train(config, Path(tmp) / f"run-{n}", n, args.steps, threads)
            rows.append({"processes": n, "threads_each": threads, "atoms_per_s": result["steady_train_atoms_per_s"]})
    base = rows[0]["atoms_per_s"] * rows[0]["processes"]
    for row in rows:
        row["efficiency"] = row["atoms_per_s"] / base
    report = {**metadata(__file__, sys.argv), "config": str(args.config), "frames": args.frames, "rows": rows}
    report["atoms_per_batch"] = args.atoms_per_batch
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(
            f"{args.config.name}, first {args.frames} frames, global batch {args.atoms_per_batch} atoms, "
            f"{args.steps} steps per run, {cores} cores"
        )
        print(" processes  threads each   atoms/s  efficiency")
        for r in rows:
            print(f"{r['processes']:10d} {r['threads_each']:13d} {r['atoms_per_s']:9.1f} {r['efficiency']:11.2f}")
    return report


if __name__ == "__main__":
    main()
