#!/usr/bin/env python
"""Large liquid water with pair_style pet on several MPI ranks: the 64-molecule SCAN box replicated to 24,000 atoms
(or 110,592 with --size 100k, meant for a GPU: --device cuda), NVT at 300 K. Reports atom-steps/s, time per step,
LAMMPS's memory per rank, temperature and the drift of the conserved energy; writes summary.json.

    python examples/large-water/run.py                          # 24,000 atoms, 2 ranks, 4 steps (~1 min on 2 cores)
    python examples/large-water/run.py --steps 2000 --ranks 2   # 1 ps
    python examples/large-water/run.py --size 100k --device cuda --ranks 1 --model models/pet-water.pt
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from petmd.helpers.example_cli import example_parser, parse_example_args
from petmd.helpers.lammps_run import read_thermo, run_lammps
from petmd.helpers.report import drift_per_atom_ps
from petmd.helpers.structures import liquid_water, write_lammps_data

HERE = Path(__file__).resolve().parent
SIZES = {"24k": (5, 5, 5), "100k": (8, 8, 9)}


def performance(log: Path) -> dict:
    """LAMMPS's own figures from the log: loop time, atom-steps/s, memory per rank."""
    text = log.read_text()
    loop = re.findall(r"Loop time of ([\d.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", text)
    memory = re.findall(
        r"Per MPI rank memory allocation \(min/avg/max\) = ([\d.]+) \| ([\d.]+) \| ([\d.]+) Mbytes", text
    )
    if not loop:
        return {}
    seconds, procs, steps, atoms = float(loop[-1][0]), int(loop[-1][1]), int(loop[-1][2]), int(loop[-1][3])
    return {
        "loop_s": seconds,
        "ranks": procs,
        "steps": steps,
        "atoms": atoms,
        "s_per_step": seconds / max(steps, 1),
        "atom_steps_per_s": atoms * steps / seconds if seconds else None,
        "lammps_memory_per_rank_mib_max": float(memory[-1][2]) if memory else None,
    }


def main(argv=None) -> dict:
    parser = example_parser(__doc__, HERE)
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="24k",
        help="24k: 5x5x5 copies (24,000 atoms); 100k: 8x8x9 copies (110,592 atoms)",
    )
    parser.add_argument("--steps", type=int, default=4, help="MD steps (default 4: the short form)")
    parser.add_argument("--ranks", type=int, default=2, help="MPI ranks (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    args = parse_example_args(parser, argv)
    out = args.output
    start = time.monotonic()
    write_lammps_data(liquid_water(), out / "water.data")
    nx, ny, nz = SIZES[args.size]
    wall = run_lammps(
        HERE / "nvt.lammps",
        out,
        {
            "model": args.model.resolve(),
            "data": "water.data",
            "nx": nx,
            "ny": ny,
            "nz": nz,
            "steps": args.steps,
            "device": args.device,
        },
        ranks=args.ranks,
        log="nvt.log",
    )
    run = read_thermo(out / "nvt.log")[-1]
    perf = performance(out / "nvt.log")
    summary = {
        "model": str(args.model),
        "size": args.size,
        "device": args.device,
        "lammps_wall_s": wall,
        **perf,
        "temperature_final_K": float(run["Temp"][-1]),
        "conserved_energy_drift_meV_per_atom_ps": drift_per_atom_ps(
            run["Time"], run["Econserve"], perf.get("atoms", 1)
        ),
        "wall_s": time.monotonic() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(
        f"{perf['atoms']:,} atoms of liquid water, {perf['steps']} steps on {perf['ranks']} rank(s), "
        f"{args.device}, {args.model.name}"
    )
    print(
        f"  {perf['s_per_step']:.3f} s/step, {perf['atom_steps_per_s']:,.0f} atom-steps/s, LAMMPS memory "
        f"{perf['lammps_memory_per_rank_mib_max']} MiB/rank (the model's tensors come on top)"
    )
    print(
        f"  T at the end {summary['temperature_final_K']:.1f} K; conserved-energy drift "
        f"{summary['conserved_energy_drift_meV_per_atom_ps']:.3g} meV/atom/ps (over {run['Time'][-1]:.4f} ps)"
    )
    print(f"finished in {summary['wall_s'] / 60:.1f} min; log and summary.json in {out}")
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
