#!/usr/bin/env python
"""compute pet/uncertainty in LAMMPS (issue 35, docs/uncertainty.md): what it costs, and what it says in MD.

Cost: liquid water (the SCAN set's first 192-atom multithermal frame, replicated), NVE at 300 K, 0.5 fs steps, one
MPI rank, in-process LAMMPS; LAMMPS's loop time per step of `run STEPS` (after `run 0` and a warm-up run) without the
compute, with its values read every step (fix print), and every 10th step; thermo output every 1000 steps. Variants run
interleaved, ROUNDS times, in reversed order every other round; the best of each is reported, and the spread of the
runs without the compute (run-to-run noise on a shared 2-core machine is ±5 %).

In MD: the energy σ per atom and the largest atomic extrapolation score along NVT runs of the liquid at 300 K and at
1000 K, and an isolated molecule (examples/gas-phase: no isolated molecules in the training data) under
`fix halt` on the score at 20.

    python benchmarks/uncertainty_lammps.py --model models/pet-water-small.pt          # a file exported --uncertainty
    python benchmarks/uncertainty_lammps.py --sizes 192 --steps 20 --rounds 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from machine import metadata  # noqa: E402  (benchmarks/machine.py)
from petmd.helpers.structures import liquid_water, write_lammps_data
from petmd.lammps_plugin import lammps

ROOT = Path(__file__).resolve().parents[1]
# thermo output asks every compute that tracks its steps (LAMMPS cannot know which a thermo variable will use), so
# the compute is read through fix print here, with thermo output as rare as in production
VARIANTS = {
    "without": "thermo_style custom step pe\nthermo 1000",
    "every step": "compute u all pet/uncertainty\nthermo_style custom step pe\nthermo 1000\n"
    'fix every1 all print 1 "$(c_u) $(c_u[3])" screen no',
    "every 10th step": "compute u all pet/uncertainty\nthermo_style custom step pe\nthermo 1000\n"
    'fix every10 all print 10 "$(c_u) $(c_u[3])" screen no',
}


def run_script(script: str, log: Path) -> str:
    lmp = lammps(cmdargs=["-log", str(log), "-screen", "none", "-nocite"])
    try:
        lmp.commands_string(script)
    finally:
        lmp.close()
    return log.read_text()


def header(model: Path, data: Path, threads: int) -> str:
    return f"""units metal
atom_style atomic
atom_modify map hash
read_data {data}
pair_style pet {model} threads {threads}
pair_coeff * * O H
timestep 0.0005
"""


def loop_time(model: Path, data: Path, variant: str, steps: int, threads: int, folder: Path) -> float:
    script = (
        header(model, data, threads)
        + f"""velocity all create 300 12345 loop geom
fix md all nve
{VARIANTS[variant]}
run 0
run 2
run {steps}
"""
    )
    text = run_script(script, folder / f"{variant.replace(' ', '-')}.log")
    times = re.findall(r"Loop time of ([0-9.e+-]+) on \d+ procs for (\d+) steps", text)
    seconds, n = times[-1]
    return float(seconds) / int(n)


def md_trace(model: Path, data: Path, temperature: float, steps: int, threads: int, folder: Path) -> dict:
    out = folder / f"trace-{temperature:g}.txt"
    script = (
        header(model, data, threads)
        + f"""velocity all create {temperature} 4928459 loop geom
fix md all nvt temp {temperature} {temperature} 0.05
compute u all pet/uncertainty
fix trace all print 20 "$(step) $(c_u[2]:%.9g) $(c_u[3]:%.9g)" file {out} screen no
thermo 100
run {steps}
"""
    )
    run_script(script, folder / f"trace-{temperature:g}.log")
    step, sigma, score = np.loadtxt(out, unpack=True)
    late = step >= steps // 2
    return {
        "temperature_K": temperature,
        "steps": steps,
        "sigma_mev_per_atom_median": 1e3 * float(np.median(sigma[late])),
        "max_score_median": float(np.median(score[late])),
        "max_score_max": float(score.max()),
    }


def gas_phase_halt(model: Path, threads: int, folder: Path) -> dict:
    out = folder / "gas.txt"
    data = ROOT / "examples" / "gas-phase" / "water-molecule.data"
    script = f"""units metal
atom_style atomic
boundary f f f
read_data {data}
pair_style pet {model} threads {threads}
pair_coeff * * O H
compute u all pet/uncertainty
variable score equal c_u[3]
velocity all create 300 4928459 mom yes rot yes loop geom
fix md all nve
timestep 0.0005
fix stop all halt 10 v_score > 20 error continue
run 200
print "$(step) $(c_u[2]:%.9g) $(c_u[3]:%.9g)" file {out}
"""
    run_script(script, folder / "gas.log")
    step, sigma, score = np.loadtxt(out)
    return {"halted_at_step": int(step), "sigma_mev_per_atom": 1e3 * float(sigma), "max_score": float(score)}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "pet-water-small.pt")
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 1536], help="192 × k³ atoms")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run (default 40)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trace-steps", type=int, default=400, help="steps of the 300 K and 1000 K runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    report: dict = {**metadata(__file__, sys.argv), "model": str(args.model), "cost": {}, "md": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in args.sizes:
            k = round((size / 192) ** (1 / 3))
            data = write_lammps_data(liquid_water((k, k, k)), folder / f"water-{size}.data")
            times: dict = {variant: [] for variant in VARIANTS}
            for round_number in range(args.rounds):
                order = list(VARIANTS) if round_number % 2 == 0 else list(reversed(VARIANTS))
                for variant in order:
                    times[variant].append(loop_time(args.model, data, variant, args.steps, args.threads, folder))
            best = {variant: min(values) for variant, values in times.items()}
            report["cost"][size] = {
                "seconds_per_step": best,
                "all_seconds_per_step": times,
                "spread_without": max(times["without"]) / min(times["without"]) - 1,
                "extra_every_step": best["every step"] / best["without"] - 1,
                "extra_every_10th_step": best["every 10th step"] / best["without"] - 1,
            }
            print(
                f"{size} atoms: {1e3 * best['without']:.1f} ms/step without, every step "
                f"{100 * report['cost'][size]['extra_every_step']:+.1f} %, every 10th "
                f"{100 * report['cost'][size]['extra_every_10th_step']:+.1f} % (best of {args.rounds}; runs without it "
                f"spread by {100 * report['cost'][size]['spread_without']:.0f} %)",
                flush=True,
            )
        data = folder / "water-192.data"
        if not data.exists():
            write_lammps_data(liquid_water(), data)
        for temperature in (300.0, 1000.0):
            trace = md_trace(args.model, data, temperature, args.trace_steps, args.threads, folder)
            report["md"].append(trace)
            print(
                f"liquid NVT {temperature:g} K, second half of {args.trace_steps} steps: σ "
                f"{trace['sigma_mev_per_atom_median']:.2f} meV/atom, largest atomic score "
                f"{trace['max_score_median']:.1f} (max {trace['max_score_max']:.1f})",
                flush=True,
            )
        report["gas_phase"] = gas_phase_halt(args.model, args.threads, folder)
        g = report["gas_phase"]
        print(
            f"isolated molecule, fix halt at score 20: stopped at step {g['halted_at_step']} (σ "
            f"{g['sigma_mev_per_atom']:.1f} meV/atom, largest score {g['max_score']:.0f})"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
