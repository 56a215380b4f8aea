#!/usr/bin/env python
"""The symmetry figures of docs/symmetry.md for one model, in one command.

1. plain model vs its grid-3i average on validation frames (the first --val-frames of a training run's split.json,
   else every 100th frame of the data);
2. the same on frames of a bulk-liquid MD run with the model itself (LAMMPS, pair_style pet, the 192-atom
   `multithermal` SCAN frame, NVE from 300 K, 0.5 fs, --md-steps steps, --md-frames frames dumped at the end);
3. an isolated water molecule (examples/gas-phase/water-molecule.data) against grid 4i, for every --modes mode;
4. the first MD frame against grid 3i in every --cost-modes mode (how much of the error each remedy removes);
5. the cost of every --cost-modes mode in LAMMPS: atom-steps/s on the 192-atom frame (1 rank, --threads threads,
   NVE), from LAMMPS's loop time over enough steps to last about --budget seconds (at least 2).

    python benchmarks/symmetry_figures.py models/pet-water.pt --split runs/pet-water/split.json --json sym.json
    python benchmarks/symmetry_figures.py tests/models/pet-water-tiny-f64.pt --split runs/tiny/split.json

Prints Markdown tables; --json writes every figure (and the command, machine and date).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import ase.io
import numpy as np
from ase.data import atomic_numbers

from lammps_throughput import LammpsRun  # noqa: E402  (benchmarks/)
from machine import available_cores, cpu_model  # noqa: E402
from petmd.data import default_data_path, find_structure
from petmd.symmetry import symmetry_error

REPO = Path(__file__).resolve().parents[1]
MOLECULE = REPO / "examples" / "gas-phase" / "water-molecule.data"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def errors(result: dict) -> dict:
    keys = (
        "n_frames",
        "energy_mae_mev_per_structure",
        "energy_mae_mev_per_atom",
        "force_mae_mev_per_A",
        "force_max_mev_per_A",
        "energy_std_mev_per_atom",
    )
    return {k: result[k] for k in keys}


def md_frames(model: Path, atoms, steps: int, n_frames: int, threads: int, workdir: Path) -> Path:
    run = LammpsRun(atoms, model, "cpu", threads, workdir)
    every = max(1, steps // n_frames)
    dump = workdir / "md.dump"
    run.command(f"dump frames all custom {every} {dump} id type x y z")
    run.command("dump_modify frames sort id")
    run.run(steps)
    run.close()
    frames = ase.io.read(dump, index=f"-{n_frames}:", format="lammps-dump-text")
    numbers = np.array([atomic_numbers[s] for s in run.species])
    for frame in frames:  # ASE reads the type column as atomic numbers: type t is species[t - 1]
        frame.numbers = numbers[frame.numbers - 1]
        frame.calc = None
    out = workdir / "md-frames.xyz"
    ase.io.write(out, frames)
    return out


def molecule_file(workdir: Path) -> Path:
    atoms = ase.io.read(MOLECULE, format="lammps-data", Z_of_type={1: 8, 2: 1}, atom_style="atomic")
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    out = workdir / "molecule.xyz"
    ase.io.write(out, atoms)
    return out


def lammps_cost(model: Path, atoms, mode: str, threads: int, budget: float, workdir: Path) -> dict:
    keyword = mode.replace(":", " ")
    run = LammpsRun(atoms, model, "cpu", threads, workdir, pair_extra=f"symmetrize {keyword}")
    run.run(1)
    probe = run.run(2) / 2
    steps = int(max(2, min(200, budget / max(probe, 1e-9))))
    run.run(steps)
    figures = run.close()
    return {
        "mode": mode,
        "steps": steps,
        "loop_time_s": figures["loop_time_s"],
        "atom_steps_per_s": len(atoms) * steps / figures["loop_time_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=None, help="SCAN water set (default: $PETMD_DATA or ../shared)")
    parser.add_argument("--split", type=Path, default=None, help="a training run's split.json")
    parser.add_argument("--val-frames", type=int, default=6)
    parser.add_argument("--md-steps", type=int, default=400)
    parser.add_argument("--md-frames", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=["none", "random", "grid:2", "grid:2i", "grid:3i", "ecse"])
    parser.add_argument("--cost-modes", nargs="+", default=["none", "random", "grid:2", "ecse"])
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per LAMMPS cost run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    data = args.data or default_data_path()
    if data.is_dir():
        data = data / "water-scan.extxyz.gz"
    result = {
        "model": str(args.model),
        "command": " ".join(sys.argv),
        "cpu": cpu_model(),
        "threads": args.threads,
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    liquid = find_structure(data, n_atoms=192, config_type="multithermal")
    with tempfile.TemporaryDirectory(prefix="petmd-symfig-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        if args.split:
            indices = json.loads(args.split.read_text())["validation"][: args.val_frames]
        else:
            indices = list(range(0, 100 * args.val_frames, 100))
        log(f"validation frames {indices} vs 3i ...")
        result["validation"] = errors(symmetry_error(args.model, data, "3i", indices=indices, progress=False))
        log(f"MD: {args.md_steps} steps ...")
        (tmp / "md").mkdir()
        frames = md_frames(args.model, liquid, args.md_steps, args.md_frames, args.threads, tmp / "md")
        log("MD frames vs 3i ...")
        result["md"] = errors(symmetry_error(args.model, frames, "3i", progress=False))
        molecule = molecule_file(tmp)
        result["molecule"], result["md_frame_by_mode"], result["cost"] = {}, {}, {}
        for mode in args.modes:
            log(f"molecule vs 4i, {mode} ...")
            result["molecule"][mode] = errors(
                symmetry_error(args.model, molecule, "4i", symmetrize=mode, progress=False)
            )
        for mode in args.cost_modes:
            log(f"first MD frame vs 3i, {mode} ...")
            result["md_frame_by_mode"][mode] = errors(
                symmetry_error(args.model, frames, "3i", max_frames=1, symmetrize=mode, progress=False)
            )
            log(f"LAMMPS cost, {mode} ...")
            (tmp / mode).mkdir()
            result["cost"][mode] = lammps_cost(args.model, liquid, mode, args.threads, args.budget, tmp / mode)
        result["wall_s"] = time.perf_counter() - t0
    print_tables(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def print_tables(r: dict) -> None:
    print(f"model {r['model']} — {r['cpu']}, {r['threads']} threads, {r['date']}\n")
    print("| frames | reference | E meV/structure | E meV/atom | F MAE meV/Å | F max meV/Å | E std meV/atom |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, key in (("validation", "validation"), ("bulk-liquid MD", "md")):
        e = r[key]
        print(
            f"| {e['n_frames']} {label} frames | 3i | {e['energy_mae_mev_per_structure']:.3g} | "
            f"{e['energy_mae_mev_per_atom']:.3g} | {e['force_mae_mev_per_A']:.3g} | {e['force_max_mev_per_A']:.3g} | "
            f"{e['energy_std_mev_per_atom']:.3g} |"
        )
    e = r["molecule"].get("none")
    if e:
        print(
            f"| isolated molecule | 4i | {e['energy_mae_mev_per_structure']:.3g} | {e['energy_mae_mev_per_atom']:.3g} "
            f"| {e['force_mae_mev_per_A']:.3g} | {e['force_max_mev_per_A']:.3g} | {e['energy_std_mev_per_atom']:.3g} |"
        )
    print(
        "\n| mode | molecule E meV (vs 4i) | molecule F MAE meV/Å | MD frame E meV/atom (vs 3i) | MD frame F MAE meV/Å "
        "| LAMMPS atom-steps/s | cost vs none |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = r["cost"].get("none", {}).get("atom_steps_per_s")
    for mode in dict.fromkeys(list(r["molecule"]) + list(r["cost"])):
        m, f, c = r["molecule"].get(mode), r["md_frame_by_mode"].get(mode), r["cost"].get(mode)
        cells = [
            f"{m['energy_mae_mev_per_structure']:.2g}" if m else "",
            f"{m['force_mae_mev_per_A']:.2g}" if m else "",
            f"{f['energy_mae_mev_per_atom']:.2g}" if f else "",
            f"{f['force_mae_mev_per_A']:.2g}" if f else "",
            f"{c['atom_steps_per_s']:,.0f}" if c else "",
            f"{base / c['atom_steps_per_s']:.1f}×" if c and base else "",
        ]
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
