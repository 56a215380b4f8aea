#!/usr/bin/env python
"""One water molecule in vacuum, NVE from rest (zero linear and angular momentum), with each symmetrization mode of
pair_style pet: how far the total angular momentum |L| and the net torque drift from zero, next to the model's
symmetry error, and what each mode costs. Writes angmom.png, angmom.csv and summary.json.

    python examples/gas-phase/run.py                                  # 0.3 ps per mode, < 1 min on 2 cores
    python examples/gas-phase/run.py --long                           # 10 ps per mode
    python examples/gas-phase/run.py --modes none "grid 2i" --model models/pet-water.pt
    python examples/gas-phase/run.py --mts 4                          # + each mode's correction every 4th step
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from petmd.helpers.example_cli import example_parser, parse_example_args
from petmd.helpers.lammps_run import read_thermo, run_lammps
from petmd.helpers.report import plot_angular_momentum
from petmd.tables import Column, column_table

HERE = Path(__file__).resolve().parent
PAIR_FILE = HERE.parent / "pair-pet.lammps"  # pair_style pet, or the two terms of multiple time stepping
SAMPLE_EVERY = 20  # steps of 0.5 fs between samples of L and the torque
SHORT_STEPS, LONG_STEPS = 600, 20000
MODES = ["none", "grid 2i", "random", "ecse"]


def run_mode(out: Path, model: Path, mode: str, steps: int, mts: int = 1) -> dict:
    """One NVE run in ``mode``; with mts > 1, the network as trained every step and the correction to ``mode``
    every mts-th (r-RESPA)."""
    label = mode if mts == 1 else f"{mode}, MTS {mts}"
    folder = out / label.replace(" ", "-").replace(",", "")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "water-molecule.data", folder)
    variables = {"model": model.resolve(), "mode": mode, "steps": steps, "mts": mts, "every": SAMPLE_EVERY}
    wall = run_lammps(HERE / "molecule.lammps", folder, dict(variables, pairfile=PAIR_FILE), quiet=True)
    run = read_thermo(folder / "log.lammps")[-1]
    return {
        "mode": label,
        "wall_s": wall,
        "time_ps": run["Time"].tolist(),
        "L": run["v_L"].tolist(),
        "torque": run["v_tau"].tolist(),
        "etotal": run["TotEng"].tolist(),
        "L_final": float(run["v_L"][-1]),
        "L_max": float(run["v_L"].max()),
        "torque_max_eV": float(run["v_tau"].max()),
        "energy_drift_meV": float(1e3 * (run["TotEng"][-1] - run["TotEng"][0])),
        "sym_force_err_mean_meV_per_A": float(1e3 * run["c_sym[2]"].mean()),
    }


TABLE = [
    Column("mode", "", 14, "", "mode"),
    Column("|L| end", "amu Å²/ps", 10, ".3g", "L_final"),
    Column("|L| max", "amu Å²/ps", 10, ".3g", "L_max"),
    Column("max torque", "eV", 11, ".3g", "torque_max_eV"),
    Column("ΔE_tot", "meV", 10, ".3g", "energy_drift_meV"),
    Column("sym. err. F", "meV/Å", 12, ".3g", "sym_force_err_mean_meV_per_A"),
    Column("wall", "s", 7, ".1f", "wall_s"),
]


def main(argv=None) -> dict:
    parser = example_parser(__doc__, HERE)
    parser.add_argument("--modes", nargs="+", default=MODES, help=f"symmetrize modes (default: {' | '.join(MODES)})")
    parser.add_argument("--long", action="store_true", help=f"{LONG_STEPS} steps per mode")
    parser.add_argument("--steps", type=int, help=f"steps per mode (default {SHORT_STEPS})")
    parser.add_argument(
        "--mts",
        type=int,
        metavar="N",
        help="also run each symmetrized mode by multiple time stepping: the network as trained every 0.5 fs, the "
        f"correction every N-th step (N divides {SAMPLE_EVERY}, the sampling interval)",
    )
    args = parse_example_args(parser, argv)
    steps = args.steps or (LONG_STEPS if args.long else SHORT_STEPS)
    if args.mts is not None and (args.mts < 2 or SAMPLE_EVERY % args.mts or steps % args.mts):
        parser.error(f"--mts N needs N >= 2 dividing {SAMPLE_EVERY} and the number of steps ({steps})")
    start = time.monotonic()
    results = [run_mode(args.output, args.model, mode, steps) for mode in args.modes]
    if args.mts:
        results += [run_mode(args.output, args.model, m, steps, args.mts) for m in args.modes if m != "none"]
    plot_angular_momentum([(r["mode"], r["time_ps"], r["L"], r["torque"]) for r in results], args.output / "angmom.png")
    t = np.array(results[0]["time_ps"])
    np.savetxt(
        args.output / "angmom.csv",
        np.column_stack([t] + [r["L"] for r in results]),
        delimiter=",",
        header=",".join(["time_ps"] + [f"L_{r['mode'].replace(' ', '')}" for r in results]),
        comments="",
    )
    summary = {"model": str(args.model), "steps": steps, "results": results, "wall_s": time.monotonic() - start}
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"one water molecule, NVE {steps} steps of 0.5 fs from zero angular momentum; {args.model.name}")
    print(column_table(TABLE, results))
    print(
        f"symmetry error: mean |F - F_2i| of the network as trained (compute pet/symmetry); "
        f"plots and summary.json in {args.output}"
    )
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
