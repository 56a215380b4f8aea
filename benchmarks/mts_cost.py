#!/usr/bin/env python
"""Cost of symmetrized MD in LAMMPS: plain PET, the full grid-2i average, ECSE, and multiple time stepping (the
network as trained every 0.5 fs, the grid-2i correction every n-th step through r-RESPA) for n = 4, 8, 16.

Each row: the 192-atom `multithermal` SCAN liquid frame, replicated k×k×k, in one in-process LAMMPS with one rank and
--threads torch threads, NVE from 300 K; `run 0`, one untimed outer step, then --outer timed outer steps (each n
inner steps of 0.5 fs for MTS, one step otherwise). The figure is LAMMPS's loop time per 0.5 fs of simulated time;
speed-up = full grid-2i cost / MTS cost at the same size.

    python benchmarks/mts_cost.py                              # 192 and 1536 atoms, models/pet-water-small.pt
    python benchmarks/mts_cost.py --sizes 192 --outer 2 --json mts.json
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from machine import available_cores, finish, metadata  # noqa: E402  (benchmarks/machine.py)
from petmd.helpers.structures import liquid_water, write_lammps_data

REPO = Path(__file__).resolve().parents[1]
INNER_PS = 0.0005


def pair_lines(model: Path, threads: int, mode: str, n: int) -> list:
    """The potential of one row: mode plain | grid 2i | ecse, or grid 2i corrected every n steps (n > 0)."""
    if n > 0:
        return [
            f"pair_style hybrid/overlay pet {model} threads {threads} pet {model} threads {threads} "
            "symmetrize grid 2i correction yes",
            "pair_coeff * * pet 1 O H",
            "pair_coeff * * pet 2 O H",
            f"run_style respa 2 {n} hybrid 1 2",
            f"timestep {INNER_PS * n}",
        ]
    extra = "" if mode == "plain" else f" symmetrize {mode}"
    return [f"pair_style pet {model} threads {threads}{extra}", "pair_coeff * * O H", f"timestep {INNER_PS}"]


def seconds_per_inner_step(data: Path, model: Path, threads: int, mode: str, n: int, outer: int, log: Path) -> float:
    from petmd.lammps_plugin import lammps

    lmp = lammps(cmdargs=["-log", str(log), "-screen", "none", "-nocite"])
    try:
        for command in ["units metal", "atom_style atomic", f"read_data {data}"] + pair_lines(model, threads, mode, n):
            lmp.command(command)
        for command in ["velocity all create 300 4928459 mom yes rot yes", "fix md all nve", "thermo 0", "run 1"]:
            lmp.command(command)
        lmp.command(f"run {outer}")
    finally:
        lmp.close()
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on", log.read_text())
    return float(loops[-1]) / (outer * max(n, 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "pet-water-small.pt")
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 1536], help="192·k³ atoms")
    parser.add_argument("--outer", type=int, default=2, help="timed outer steps per row (default 2)")
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            k = round((size / 192) ** (1 / 3))
            data = write_lammps_data(liquid_water((k, k, k)), Path(tmp) / f"water-{size}.data")
            cases = [("plain", 0), ("grid 2i", 0), ("ecse", 0), ("MTS n=4", 4), ("MTS n=8", 8), ("MTS n=16", 16)]
            for label, n in cases:
                seconds = seconds_per_inner_step(
                    data, args.model, args.threads, label, n, args.outer, Path(tmp) / "log"
                )
                rows.append({"atoms": size, "mode": label, "n": n, "s_per_0.5fs": seconds})
                print(f"{size:6d} atoms  {label:9s} {seconds:9.4f} s per 0.5 fs", file=sys.stderr, flush=True)
    print("| atoms | mode | s per 0.5 fs | × plain | speed-up over grid 2i |")
    print("|---:|---|---:|---:|---:|")
    for row in rows:
        same = {r["mode"]: r["s_per_0.5fs"] for r in rows if r["atoms"] == row["atoms"]}
        row["x_plain"] = row["s_per_0.5fs"] / same["plain"]
        row["speedup_over_grid_2i"] = same["grid 2i"] / row["s_per_0.5fs"]
        print(
            f"| {row['atoms']} | {row['mode']} | {row['s_per_0.5fs']:.4f} | {row['x_plain']:.1f} | "
            f"{row['speedup_over_grid_2i']:.1f} |"
        )
    finish(metadata("mts_cost.py", argv), args.json, f", {args.threads} threads, {args.model.name}", rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
