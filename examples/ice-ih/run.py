#!/usr/bin/env python
"""Proton-disordered ice Ih with pair_style pet: GenIce2 cells of several sizes and proton orders, each relaxed
(fixed cell) with the plain model and with the model averaged over grid 2i; the table of relaxed energies per
molecule, and the spread of energies over proton orders next to the symmetry error — as in Langer, Pozdnyakov &
Ceriotti 2024, where the question is whether the symmetry error is small against the physical energy differences
between proton orders. Then NPT at 250 K and 1 bar (cell lengths, density). Writes ice-energies.csv, ice.png,
summary.json.

    python examples/ice-ih/run.py                      # short form: 3 cells of 32 molecules, 0.2 ps NPT
    python examples/ice-ih/run.py --long               # 4 sizes x 4 proton orders, 10 ps NPT
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from petmd.atomic import atomic_output
from petmd.cpu import cpu_model
from petmd.helpers.example_cli import example_parser, parse_example_args
from petmd.helpers.lammps_run import read_thermo, run_lammps
from petmd.helpers.report import format_rows, plot_thermo, summary_rows
from petmd.helpers.segments import SegmentedRun
from petmd.helpers.structures import ice_ih, write_lammps_data
from petmd.tables import Column, column_table

HERE = Path(__file__).resolve().parent
# (GenIce repetitions of the 16-molecule orthorhombic cell, proton-order seeds)
SHORT_CELLS = [((2, 1, 1), (1, 2, 3))]
LONG_CELLS = [
    ((2, 1, 1), (1, 2, 3, 4)),
    ((2, 2, 1), (1, 2, 3, 4)),
    ((2, 2, 2), (1, 2, 3, 4)),
    ((3, 2, 2), (1, 2, 3, 4)),
]
SHORT_NPT, LONG_NPT = 400, 20000
NPT_SEGMENT = 4000  # steps per resumable segment of the NPT run
NPT_COLUMNS = {
    "Temp": ("temperature", 1.0, "K"),
    "Press": ("pressure", 1e-3, "kbar"),
    "v_density": ("density", 1.0, "g/cm³"),
    "Lx": ("Lx", 1.0, "Å"),
    "Ly": ("Ly", 1.0, "Å"),
    "Lz": ("Lz", 1.0, "Å"),
}


def relax(out: Path, model: Path, replicate, seed: int, grid_iterations: int) -> dict:
    """Both relaxations of one cell; a cell already relaxed with the same model and settings (its result.json) is
    read back instead, so that a killed --long run resumes at the cell it stopped in."""
    name = f"ice-{'x'.join(map(str, replicate))}-seed{seed}"
    folder = out / name
    settings = {"model": str(model.resolve()), "grid_iterations": grid_iterations}
    cached = folder / "result.json"
    if cached.exists():
        result = json.loads(cached.read_text())
        if result.pop("settings", None) == settings:
            return result
    result = relax_cell(folder, model, replicate, seed, grid_iterations)
    with atomic_output(cached, "w") as fh:
        json.dump(dict(result, settings=settings), fh, indent=1)
    return result


def relax_cell(folder: Path, model: Path, replicate, seed: int, grid_iterations: int) -> dict:
    name = folder.name
    atoms = ice_ih(replicate, seed)
    write_lammps_data(atoms, folder / "ice.data")
    n_mol = len(atoms) // 3
    wall = run_lammps(
        HERE / "relax.lammps",
        folder,
        {"model": model.resolve(), "data": "ice.data", "iter_grid": grid_iterations},
        quiet=True,
    )
    plain, grid = read_thermo(folder / "log.lammps")[-2:]
    return {
        "cell": name,
        "replicate": list(replicate),
        "seed": seed,
        "molecules": n_mol,
        "wall_s": wall,
        "E_plain_eV_per_mol": float(plain["PotEng"][-1] / n_mol),
        "E_grid2i_eV_per_mol": float(grid["PotEng"][-1] / n_mol),
        "fmax_plain": float(plain["Fmax"][-1]),
        "fmax_grid2i": float(grid["Fmax"][-1]),
        "grid_iterations": int(grid["Step"][-1] - grid["Step"][0]),
        # |E - E_2i| of the network at the plain minimum, per molecule (compute pet/symmetry gives it per atom)
        "sym_err_meV_per_mol": float(1e3 * 3 * plain["c_sym[1]"][-1]),
        "sym_force_err_meV_per_A": float(1e3 * plain["c_sym[2]"][-1]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu_model(),
    }


def ran(cells, npt: SegmentedRun) -> dict:
    """When, where and how long the stage computed: its relaxations (each cell's, whichever invocation relaxed it)
    and its NPT run."""
    npt_ran = npt.provenance()
    times = [c.get("finished") for c in cells] + [npt_ran["first_finished"], npt_ran["last_finished"]]
    finished = sorted(t for t in times if t)
    return {
        "first_finished": finished[0] if finished else None,
        "last_finished": finished[-1] if finished else None,
        "cpus": sorted({c["cpu"] for c in cells if "cpu" in c} | set(npt_ran["cpus"])),
        "wall_s": sum(c["wall_s"] for c in cells) + npt_ran["wall_s"],
    }


def analyse(cells) -> dict:
    """Per size: the spread of relaxed energies over proton orders (plain and grid 2i), the mean symmetry error, and
    whether the grid-averaged model orders the proton arrangements the same way."""
    by_size = {}
    for c in cells:
        by_size.setdefault(c["molecules"], []).append(c)
    sizes = []
    for n_mol, group in sorted(by_size.items()):
        plain = np.array([c["E_plain_eV_per_mol"] for c in group]) * 1e3
        grid = np.array([c["E_grid2i_eV_per_mol"] for c in group]) * 1e3
        same_order = bool(np.array_equal(np.argsort(plain), np.argsort(grid)))
        sizes.append(
            {
                "molecules": n_mol,
                "cells": len(group),
                "spread_plain_meV_per_mol": float(np.ptp(plain)),
                "std_plain_meV_per_mol": float(np.std(plain)),
                "spread_grid2i_meV_per_mol": float(np.ptp(grid)),
                "mean_abs_grid_minus_plain_meV_per_mol": float(np.mean(np.abs(grid - plain))),
                "mean_sym_err_meV_per_mol": float(np.mean([c["sym_err_meV_per_mol"] for c in group])),
                "same_energy_order": same_order,
            }
        )
    return {"sizes": sizes}


def plot(cells, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for n_mol in sorted({c["molecules"] for c in cells}):
        group = [c for c in cells if c["molecules"] == n_mol]
        mean = np.mean([c["E_plain_eV_per_mol"] for c in group])
        x = [c["seed"] for c in group]
        ax.plot(x, [1e3 * (c["E_plain_eV_per_mol"] - mean) for c in group], "o-", label=f"{n_mol} mol, plain")
        ax.plot(x, [1e3 * (c["E_grid2i_eV_per_mol"] - mean) for c in group], "s--", label=f"{n_mol} mol, grid 2i")
    ax.set_xlabel("proton order (GenIce seed)")
    ax.set_ylabel("relaxed E − mean (meV/molecule)")
    ax.set_title("ice Ih: proton-disorder energies, plain vs grid-averaged PET", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


CELL_TABLE = [
    Column("cell", "", 20, "", "cell"),
    Column("mol", "", 4, "d", "molecules"),
    Column("E plain", "eV/mol", 14, ".6f", "E_plain_eV_per_mol"),
    Column("E grid 2i", "eV/mol", 14, ".6f", "E_grid2i_eV_per_mol"),
    Column("2i − plain", "meV/mol", 11, ".3f", lambda c: 1e3 * (c["E_grid2i_eV_per_mol"] - c["E_plain_eV_per_mol"])),
    Column("|E − E_2i|", "meV/mol", 11, ".3f", "sym_err_meV_per_mol"),
    Column("fmax", "eV/Å", 7, ".4f", "fmax_grid2i"),
]
SIZE_TABLE = [
    Column("mol", "", 4, "d", "molecules"),
    Column("cells", "", 5, "d", "cells"),
    Column("spread plain", "meV/mol", 13, ".3f", "spread_plain_meV_per_mol"),
    Column("spread 2i", "meV/mol", 10, ".3f", "spread_grid2i_meV_per_mol"),
    Column("sym. err.", "meV/mol", 10, ".3f", "mean_sym_err_meV_per_mol"),
    Column("same order", "", 10, "", lambda s: str(s["same_energy_order"])),
]


def main(argv=None) -> dict:
    parser = example_parser(__doc__, HERE)
    parser.add_argument("--long", action="store_true", help="4 sizes × 4 proton orders, 20,000 NPT steps")
    parser.add_argument("--npt-steps", type=int, help=f"NPT steps (default {SHORT_NPT}, --long {LONG_NPT})")
    parser.add_argument(
        "--grid-iterations",
        type=int,
        default=None,
        help="most FIRE iterations of the grid-2i relaxation (default 60, --long 400)",
    )
    parser.add_argument("--ranks", type=int, default=1, help="MPI ranks of the NPT run")
    args = parse_example_args(parser, argv)
    out = args.output
    start = time.monotonic()
    grid_iterations = args.grid_iterations or (400 if args.long else 60)
    # checked before the relaxations, which take most of the time
    if args.npt_steps is not None and args.npt_steps < 1:
        parser.error(f"--npt-steps must be at least 1, got {args.npt_steps}")
    npt_steps = args.npt_steps or (LONG_NPT if args.long else SHORT_NPT)
    segments = max(1, npt_steps // NPT_SEGMENT)  # resumable: a killed run continues from its last segment
    if npt_steps % segments:
        parser.error(f"--npt-steps {npt_steps} must be a multiple of {segments} (segments of ~{NPT_SEGMENT} steps)")
    cells = [
        relax(out, args.model, replicate, seed, grid_iterations)
        for replicate, seeds in (LONG_CELLS if args.long else SHORT_CELLS)
        for seed in seeds
    ]
    analysis = analyse(cells)
    plot(cells, out / "ice.png")
    with open(out / "ice-energies.csv", "w") as fh:
        keys = list(cells[0].keys())
        fh.write(",".join(keys) + "\n")
        for c in cells:
            fh.write(",".join(str(c[k]).replace(",", ";") for k in keys) + "\n")

    # NPT at 250 K of the largest cell, from its plain minimum
    largest = max(cells, key=lambda c: (c["molecules"], -c["seed"]))
    npt_dir = out / largest["cell"]
    variables = {"model": args.model.resolve(), "data": (npt_dir / "relaxed-plain.data").resolve()}
    run = SegmentedRun(
        npt_dir / "npt", HERE / "npt.lammps", dict(variables, steps=npt_steps // segments), segments, ranks=args.ranks
    )
    run.run()
    npt_wall = run.wall_s
    npt = run.thermo()
    npt_rows = summary_rows(npt, NPT_COLUMNS)
    plot_thermo(
        npt,
        ["Temp", "Press", "v_density"],
        ["T (K)", "P (bar)", "ρ (g/cm³)"],
        out / "npt-thermo.png",
        f"ice Ih {largest['cell']}, NPT 250 K, 1 bar",
    )
    summary = {
        "model": str(args.model),
        "cells": cells,
        **analysis,
        "npt": {
            "cell": largest["cell"],
            "steps": npt_steps,
            "wall_s": npt_wall,
            "thermo": {label: {"mean": m, "err": e, "unit": u} for label, m, e, u in npt_rows},
        },
        "wall_s": time.monotonic() - start,
        "ran": ran(cells, run),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"ice Ih, {len(cells)} proton-disordered cells relaxed (fixed cell) with {args.model.name}")
    print(column_table(CELL_TABLE, cells))
    print(
        "\nper size: spread (max − min) of relaxed energies over proton orders vs the symmetry error |E − E_2i| "
        "at the plain minimum"
    )
    print(column_table(SIZE_TABLE, analysis["sizes"]))
    print(f"\nNPT 250 K, 1 bar, {largest['cell']}, {npt_steps} steps (first 20 % discarded):")
    print(format_rows(npt_rows))
    print(
        f"finished in {summary['wall_s'] / 60:.1f} min; ice-energies.csv, ice.png, npt-thermo.png, summary.json in "
        f"{out}"
    )
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
