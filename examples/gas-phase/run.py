#!/usr/bin/env python
"""One water molecule in vacuum, NVE from rest (zero linear and angular momentum), with each symmetrization mode of
pair_style pet: how far the total angular momentum |L| and the net torque drift from zero, next to the model's
symmetry error, and what each mode costs. Writes angmom.png, angmom.csv and summary.json.

    python examples/gas-phase/run.py                                  # 0.3 ps per mode, < 1 min on 2 cores
    python examples/gas-phase/run.py --long                           # 10 ps per mode
    python examples/gas-phase/run.py --modes none "grid 2i" --model models/pet-water.pt
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
from petmd.tables import Column, column_table

HERE = Path(__file__).resolve().parent
SHORT_STEPS, LONG_STEPS = 600, 20000
MODES = ["none", "grid 2i", "random", "ecse"]


def run_mode(out: Path, model: Path, mode: str, steps: int) -> dict:
    folder = out / mode.replace(" ", "-")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "water-molecule.data", folder)
    wall = run_lammps(
        HERE / "molecule.lammps", folder, {"model": model.resolve(), "mode": mode, "steps": steps}, quiet=True
    )
    run = read_thermo(folder / "log.lammps")[-1]
    return {
        "mode": mode,
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


def plot(results, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for r in results:
        t = np.array(r["time_ps"])
        axes[0].semilogy(t, np.maximum(r["L"], 1e-16), label=r["mode"])
        axes[1].semilogy(t, np.maximum(r["torque"], 1e-18), label=r["mode"])
    axes[0].set_ylabel("|L| (amu Å²/ps)")
    axes[1].set_ylabel("|net torque| (eV)")
    for ax in axes:
        ax.set_xlabel("time (ps)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("one water molecule, NVE from rest", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


TABLE = [
    Column("mode", "", 8, "", "mode"),
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
    args = parse_example_args(parser, argv)
    steps = args.steps or (LONG_STEPS if args.long else SHORT_STEPS)
    start = time.monotonic()
    results = [run_mode(args.output, args.model, mode, steps) for mode in args.modes]
    plot(results, args.output / "angmom.png")
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
