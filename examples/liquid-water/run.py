#!/usr/bin/env python
"""Liquid water (64 molecules, 300 K) with pair_style pet: prepare the box, run LAMMPS NVT (CSVR thermostat, 0.5 fs,
symmetry error on the fly) and optionally NPT (density), then summarise: temperature, energy, drift of the conserved
energy, pressure, density, symmetry error, g_OO/g_OH/g_HH with block-average errors (PNG + CSV + summary.json).

    python examples/liquid-water/run.py                       # short form: 0.2 ps NVT, ~1 min on 2 cores
    python examples/liquid-water/run.py --npt                 # + 0.2 ps NPT
    python examples/liquid-water/run.py --long --npt          # production: 10 ps NVT + 10 ps NPT
    python examples/liquid-water/run.py --model models/pet-water.pt --mode "grid 2i" --ranks 2
    python examples/liquid-water/run.py --mode "grid 2i" --mts 4  # the correction to grid 2i every 4 steps (r-RESPA)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from petmd.helpers.example_cli import example_parser, parse_example_args
from petmd.helpers.lammps_run import read_thermo, run_lammps
from petmd.helpers.report import format_rows, plot_thermo, summary_rows
from petmd.helpers.structures import HH_WALL, liquid_water, write_lammps_data
from petmd.observables.analyze import Options, analyze
from petmd.observables.output import write_outputs
from petmd.observables.structure import first_shell

HERE = Path(__file__).resolve().parent
PAIR_FILE = HERE.parent / "pair-pet.lammps"  # pair_style pet, or the two terms of multiple time stepping
SHORT_STEPS, LONG_STEPS = 400, 20000

NVT_COLUMNS = {
    "Temp": ("temperature", 1.0, "K"),
    "PotEng": ("potential energy", 1.0, "eV"),
    "Press": ("pressure", 1e-3, "kbar"),
    "c_sym[1]": ("symmetry error |E-E_grid|", 1e3, "meV/atom"),
    "c_sym[2]": ("symmetry error mean |F-F_grid|", 1e3, "meV/Å"),
}
NPT_COLUMNS = {
    "Temp": ("temperature", 1.0, "K"),
    "Press": ("pressure", 1e-3, "kbar"),
    "v_density": ("density", 1.0, "g/cm³"),
    "Volume": ("volume", 1.0, "Å³"),
}


def prepare(out: Path, replicate=(1, 1, 1)) -> Path:
    """water.data: the first 64-molecule liquid frame of the SCAN set (replicated)."""
    atoms = liquid_water(replicate)
    return write_lammps_data(atoms, out / "water.data")


def run_variables(model: Path, steps: int, mode: str, mts: int, hh_wall: float) -> dict:
    """The -var values nvt.lammps and npt.lammps share."""
    variables = {"model": model.resolve(), "data": "water.data", "steps": steps, "mode": mode, "mts": mts}
    return dict(variables, pairfile=PAIR_FILE, hhwall=hh_wall)


def run_nvt(
    out: Path,
    model: Path,
    steps: int,
    mode: str = "none",
    ranks: int = 1,
    mts: int = 1,
    symgrid: str = "2",
    symevery: int = 100,
    dumpevery: int = 20,
    hh_wall: float = HH_WALL,
) -> float:
    variables = run_variables(model, steps, mode, mts, hh_wall)
    variables.update(symgrid=symgrid, symevery=symevery, dumpevery=dumpevery)
    return run_lammps(HERE / "nvt.lammps", out, variables, ranks=ranks, log="nvt.log")


def run_npt(
    out: Path, model: Path, steps: int, mode: str = "none", ranks: int = 1, mts: int = 1, hh_wall: float = HH_WALL
) -> float:
    variables = run_variables(model, steps, mode, mts, hh_wall)
    return run_lammps(HERE / "npt.lammps", out, variables, ranks=ranks, log="npt.log")


def analyse_nvt(out: Path, discard: float = 0.2) -> dict:
    """Thermo table from the log; structure, dynamics and drift from `petmd observables` on the dump and log
    (the same as `petmd observables nvt.dump nvt.log -o OUT --discard ...`), written into ``out``."""
    run = read_thermo(out / "nvt.log")[-1]
    rows = summary_rows(run, NVT_COLUMNS, discard)
    observables = analyze(
        [str(out / "nvt.dump"), str(out / "nvt.log")], Options(discard=discard * float(run["Time"][-1]), progress=False)
    )
    write_outputs(observables, out)
    n_atoms = observables["system"]["n_atoms"]
    g_oo = observables["g_OO"]
    peak, minimum, n_oo = first_shell(g_oo, after=2.0)
    plot_thermo(
        run,
        ["Temp", "PotEng", "Econserve", "Press", "c_sym[2]"],
        ["T (K)", "PE (eV)", "E_cons (eV)", "P (bar)", "sym. err. F (eV/Å)"],
        out / "nvt-thermo.png",
        f"NVT, {n_atoms} atoms",
    )
    return {
        "n_atoms": n_atoms,
        "time_ps": float(run["Time"][-1]),
        "discarded_fraction": discard,
        "thermo": {label: {"mean": mean, "err": err, "unit": unit} for label, mean, err, unit in rows},
        "conserved_energy_drift_meV_per_atom_ps": observables["conserved_drift"]["value"],
        "g_OO": {
            "first_peak_A": peak,
            "first_peak_height": float(g_oo["g"][g_oo["r"] == peak][0]),
            "first_minimum_A": minimum,
            "coordination": n_oo,
            "frames": observables["system"]["n_frames"],
            "blocks": g_oo["n_blocks"],
        },
        "molecules": observables["molecules"],
        "files": {
            "thermo_png": "nvt-thermo.png",
            "observables": "observables.json",
            "rdf_png": "rdf.png",
            "rdf_csv": "rdf.csv",
            "dump": "nvt.dump",
            "log": "nvt.log",
        },
    }


def analyse_npt(out: Path, discard: float = 0.2) -> dict:
    run = read_thermo(out / "npt.log")[-1]
    rows = summary_rows(run, NPT_COLUMNS, discard)
    plot_thermo(
        run, ["Temp", "Press", "v_density"], ["T (K)", "P (bar)", "ρ (g/cm³)"], out / "npt-thermo.png", "NPT, 1 bar"
    )
    return {
        "time_ps": float(run["Time"][-1]),
        "thermo": {label: {"mean": mean, "err": err, "unit": unit} for label, mean, err, unit in rows},
        "files": {"thermo_png": "npt-thermo.png", "dump": "npt.dump", "log": "npt.log"},
    }


def summary_text(result: dict) -> str:
    nvt = result["nvt"]
    lines = [
        f"NVT {nvt['time_ps']:.2f} ps, {nvt['n_atoms']} atoms (first {100 * nvt['discarded_fraction']:.0f} % "
        f"discarded; ± = standard error of 5 block means)"
    ]
    lines.append(format_rows([(k, v["mean"], v["err"], v["unit"]) for k, v in nvt["thermo"].items()]))
    lines.append(
        f"  drift of the conserved energy     {nvt['conserved_energy_drift_meV_per_atom_ps']:14.4g} meV/atom/ps"
    )
    g = nvt["g_OO"]
    lines.append(
        f"  g_OO first peak {g['first_peak_height']:.2f} at {g['first_peak_A']:.2f} Å, first minimum at "
        f"{g['first_minimum_A']:.2f} Å, O–O coordination {g['coordination']:.2f} "
        f"({g['frames']} frames)"
    )
    broken, first = nvt["molecules"]["not_whole_molecule_frames"], nvt["molecules"]["first_not_whole_ps"]
    if broken:
        when = f", the first at {first:.2f} ps" if first is not None else ""
        lines.append(
            f"  WARNING: {broken} molecule-frames without exactly two H{when}: the run left water (the model's "
            "spurious region; see --hh-wall)"
        )
    if "npt" in result:
        npt = result["npt"]
        lines.append(f"NPT {npt['time_ps']:.2f} ps")
        lines.append(format_rows([(k, v["mean"], v["err"], v["unit"]) for k, v in npt["thermo"].items()]))
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = example_parser(__doc__, HERE)
    parser.add_argument("--long", action="store_true", help=f"production length: {LONG_STEPS} steps per run")
    parser.add_argument("--steps", type=int, help=f"steps per run (default {SHORT_STEPS}, --long {LONG_STEPS})")
    parser.add_argument("--npt", action="store_true", help="also run NPT at 1 bar (density)")
    parser.add_argument("--mode", default="none", help='symmetrize mode: none | random | "grid 2i" | ecse')
    parser.add_argument("--ranks", type=int, default=1, help="MPI ranks (mpiexec -np N)")
    parser.add_argument(
        "--mts",
        type=int,
        default=1,
        metavar="N",
        help="multiple time stepping: the network as trained every 0.5 fs, the correction to --mode every N steps "
        "(r-RESPA; default 1: --mode every step)",
    )
    parser.add_argument(
        "--hh-wall",
        type=float,
        default=HH_WALL,
        metavar="Å",
        help=f"an H–H repulsion below this distance, against the model's spurious region (default {HH_WALL}, below "
        "every H–H of the training data; 0: none)",
    )
    args = parse_example_args(parser, argv)
    if args.hh_wall < 0:
        parser.error(f"--hh-wall must be ≥ 0 (0: no wall), got {args.hh_wall}")
    if args.mts < 1 or (args.mts > 1 and args.mode == "none"):
        parser.error("--mts N needs N >= 1, and a --mode to correct towards when N > 1")
    steps = args.steps or (LONG_STEPS if args.long else SHORT_STEPS)
    out = args.output
    start = time.monotonic()
    prepare(out)
    result = {"model": str(args.model), "mode": args.mode, "mts": args.mts, "steps": steps, "ranks": args.ranks}
    result["hh_wall_A"] = args.hh_wall
    result["nvt_wall_s"] = run_nvt(out, args.model, steps, args.mode, args.ranks, args.mts, hh_wall=args.hh_wall)
    result["nvt"] = analyse_nvt(out)
    if args.npt:
        result["npt_wall_s"] = run_npt(out, args.model, steps, args.mode, args.ranks, args.mts, args.hh_wall)
        result["npt"] = analyse_npt(out)
    result["wall_s"] = time.monotonic() - start
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    print(summary_text(result))
    print(f"finished in {result['wall_s'] / 60:.1f} min; plots, CSV and summary.json in {out}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
