#!/usr/bin/env python
"""MD throughput of pair_style pet in LAMMPS against the bare exported model and against ASE MD, on water.

Systems: one 192-atom liquid-water frame of the SCAN water set (the first of config_type multithermal: 64 molecules,
12.38 Å cube, the frame `make demo` and the NVE test use), replicated with atoms.repeat to 192·k³ atoms (192, 1536 =
2×2×2, 12288 = 4×4×4). For each size, all on the same atoms and with the same number of timed steps:

- LAMMPS: in-process (petmd.lammps_plugin.lammps), one MPI rank, `units metal`, `atom_style atomic`,
  `pair_style pet MODEL device D threads N`, velocities at 300 K, `fix nve`, 0.5 fs steps. First `run 0` (the energy
  and forces are checked against the bare model, see below), then `run WARMUP`, then the timed `run STEPS`. The
  figure is LAMMPS's own "Loop time" of the timed run (the N MD steps, without the run's setup, which evaluates the
  forces once more); the wall clock of the whole `run STEPS` command is recorded too. Pair/Neigh/Comm fractions,
  ghost count and neighbour-list builds come from LAMMPS's timing summary.
- bare model: the exported TorchScript forward (energy + forces by autograd, i.e. forward + backward) called with
  the tensors LoadedModel.__call__ passes, the neighbour list built once (petmd.batch.frame_from_atoms) and not
  timed; WARMUP + 3 untimed calls (as many force evaluations as LAMMPS made before its timed loop: run 0, the
  warm-up run's setup and steps, the timed run's setup), then STEPS timed calls. Bridge overhead = (LAMMPS time
  per step − bare time per step) / bare time per step: neighbour lists (with the ghost shell of n_layers × cutoff
  + skin), graph folding, tensor copies, integration and communication.
- ASE: ase.md.verlet.VelocityVerlet with petmd's PETCalculator (which rebuilds the neighbour list every step),
  velocities at 300 K; WARMUP steps, then STEPS timed steps. Skipped above --ase-max-atoms, with --skip-ase, and
  on --device cuda (PETCalculator evaluates on the CPU).

atom-steps/s = atoms × steps / seconds. --steps is the most timed steps per size; with --budget, a size whose
warm-up shows that STEPS steps would take longer than the budget gets fewer (at least 2), and all three columns of
that size use that number.

    python benchmarks/lammps_throughput.py                                    # 192, 1536, 12288 atoms, all cores
    python benchmarks/lammps_throughput.py --sizes 192 --steps 3 --warmup 1 --threads 1
    python benchmarks/lammps_throughput.py --device cuda --json lammps-gpu.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import petmd
from machine import available_cores, cpu_model  # noqa: E402  (benchmarks/machine.py)
from petmd.batch import frame_from_atoms
from petmd.data import check_species, default_data_path, find_structure
from petmd.errors import PetmdError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "pet-water.pt"
BASE_ATOMS = 192
BASE_CONFIG_TYPE = "multithermal"
TIMESTEP_PS = 0.0005
TEMPERATURE_K = 300.0
SEED = 4928459


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def replication(n_atoms: int) -> int:
    """k with n_atoms = BASE_ATOMS·k³; SystemExit otherwise."""
    k = round((n_atoms / BASE_ATOMS) ** (1.0 / 3.0)) if n_atoms > 0 else 0
    if k < 1 or BASE_ATOMS * k**3 != n_atoms:
        valid = ", ".join(str(BASE_ATOMS * m**3) for m in range(1, 6))
        raise SystemExit(
            f"--sizes: {n_atoms} atoms is not {BASE_ATOMS}·k³ (the systems are a {BASE_ATOMS}-atom "
            f"water frame repeated k×k×k times): use one of {valid}, ..."
        )
    return k


# --------------------------------------------------------------------------------------------------- the water frame

# ----------------------------------------------------------------------------------------------------------- LAMMPS

_FLOAT = r"([-+0-9.eE]+)"


def parse_lammps_log(text: str) -> dict:
    """Figures of the last run in a LAMMPS log: loop time, section fractions, atom/ghost counts, neighbour builds."""
    out = {}
    loops = re.findall(rf"Loop time of {_FLOAT} on (\d+) procs for (\d+) steps with (\d+) atoms", text)
    if loops:
        t, procs, steps, atoms = loops[-1]
        out.update(loop_time_s=float(t), procs=int(procs), loop_steps=int(steps), atoms=int(atoms))
    last = text[text.rfind("Loop time of") :] if loops else text
    sections = {}
    for name in ("Pair", "Neigh", "Comm", "Output", "Modify", "Other"):
        m = re.search(rf"^{name}\s*\|.*\|\s*{_FLOAT}\s*$", last, flags=re.M)
        if m:
            sections[name.lower()] = float(m.group(1))
    out["section_percent"] = sections
    for key, label in (("nlocal", "Nlocal"), ("nghost", "Nghost"), ("full_neighbors", "FullNghs")):
        m = re.search(rf"^{label}:\s*{_FLOAT} ave", last, flags=re.M)
        if m:
            out[key] = float(m.group(1))
    m = re.search(r"Neighbor list builds = (\d+)", last)
    if m:
        out["neighbor_builds"] = int(m.group(1))
    m = re.search(r"pair_style pet: ghost atom cutoff set to (\S+) A", text)
    if m:
        out["ghost_cutoff_A"] = float(m.group(1))
    return out


class LammpsRun:
    """One in-process LAMMPS instance running NVE water with pair_style pet."""

    def __init__(self, atoms, model: Path, device: str, threads: int, workdir: Path, pair_extra: str = ""):
        import ase.io

        from petmd.lammps_plugin import lammps

        self.natoms = len(atoms)
        self.species = list(dict.fromkeys(atoms.get_chemical_symbols()))  # atom type t = species[t - 1]
        self.log_path = workdir / f"log-{self.natoms}.lammps"
        data_path = workdir / f"water-{self.natoms}.data"
        ase.io.write(
            data_path,
            atoms,
            format="lammps-data",
            specorder=self.species,
            masses=True,
            atom_style="atomic",
            units="metal",
        )
        self.lmp = lammps(cmdargs=["-log", str(self.log_path), "-screen", "none", "-nocite"])
        self.version = self.lmp.version()
        commands = [
            "units metal",
            "atom_style atomic",
            "boundary p p p",
            f"read_data {data_path}",
            f"pair_style pet {model} device {device} threads {threads} {pair_extra}".rstrip(),
            "pair_coeff * * " + " ".join(self.species),
            f"velocity all create {TEMPERATURE_K} {SEED} dist gaussian mom yes rot no",
            "fix integrate all nve",
            f"timestep {TIMESTEP_PS}",
            "thermo 0",
        ]
        for command in commands:
            self.command(command)

    def command(self, command: str) -> None:
        try:
            self.lmp.command(command)
        except Exception as err:
            raise SystemExit(f"LAMMPS failed on `{command}`: {err}\n(see {self.log_path})") from None

    def energy_forces(self):
        """`run 0`: potential energy (eV) and forces (eV/Å) in atom-ID order."""
        self.command("run 0")
        energy = float(self.lmp.get_thermo("pe"))
        ids = np.array(self.lmp.numpy.extract_atom("id"), copy=True)[: self.natoms]
        forces = np.array(self.lmp.numpy.extract_atom("f"), copy=True)[: self.natoms]
        return energy, forces[np.argsort(ids)]

    def run(self, steps: int) -> float:
        t0 = time.perf_counter()
        self.command(f"run {steps}")
        return time.perf_counter() - t0

    def close(self) -> dict:
        self.lmp.close()
        text = self.log_path.read_text(errors="replace")
        return parse_lammps_log(text)


# ------------------------------------------------------------------------------------------------- bare model, ASE


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_inputs(frame, device: str):
    """The tensors LoadedModel.__call__ passes to the exported forward, already on the device."""
    return (
        torch.from_numpy(frame.positions).to(device),
        torch.from_numpy(frame.numbers).to(device),
        torch.from_numpy(frame.cell).to(device),
        torch.from_numpy(frame.edge_index).to(device),
        torch.from_numpy(frame.cell_shifts).to(device),
        torch.ones(frame.n_atoms, dtype=torch.bool, device=device),
    )


def time_bare(module, inputs, device: str, warmup: int, steps: int):
    """Per-call seconds of the exported forward (energy, and forces by autograd), in the executor mode the C++ bridge
    and LoadedModel use (no TorchScript graph optimisation)."""
    with torch.jit.optimized_execution(False):
        return _time_calls(module, inputs, device, warmup, steps)


def _time_calls(module, inputs, device: str, warmup: int, steps: int):
    for _ in range(warmup):
        module(*inputs)["forces"].sum().item()
    times = []
    for _ in range(steps):
        synchronize(device)
        t0 = time.perf_counter()
        out = module(*inputs)
        out["forces"].sum().item()  # waits for the device
        times.append(time.perf_counter() - t0)
    return times


def time_ase(atoms, loaded, warmup: int, steps: int) -> float:
    """Seconds for `steps` velocity-Verlet steps with PETCalculator (after `warmup` steps)."""
    from ase import units
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    from petmd.calculator import PETCalculator

    atoms = atoms.copy()
    atoms.calc = PETCalculator(loaded)
    rng = np.random.default_rng(SEED)
    if hasattr(vd, "thermalize_momenta"):  # ASE ≥ 3.29
        vd.thermalize_momenta(atoms, TEMPERATURE_K, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K, rng=rng)
    vd.Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=TIMESTEP_PS * 1000 * units.fs)
    dyn.run(max(warmup, 1))  # forces of the current positions are cached after this, so run(steps) evaluates `steps`
    t0 = time.perf_counter()
    dyn.run(steps)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------------ one size


def measure(n_atoms: int, base, args, loaded, threads: int, workdir: Path) -> dict:
    k = replication(n_atoms)
    atoms = base.repeat((k, k, k))
    row = {"atoms": n_atoms, "replication": [k, k, k], "cell_A": [round(float(x), 4) for x in atoms.cell.lengths()]}
    frame = frame_from_atoms(atoms, loaded.cutoff)
    row["edges"] = int(frame.edge_index.shape[1])

    # LAMMPS: run 0 (check), warm-up, timed run
    log(f"[{n_atoms} atoms] LAMMPS: setting up (pair_style pet, device {args.device}, {threads} threads)")
    lmp = LammpsRun(atoms, args.model, args.device, threads, workdir, "tf32 yes" if args.tf32 else "")
    row["lammps_version"] = lmp.version
    t0 = time.perf_counter()
    lmp_energy, lmp_forces = lmp.energy_forces()
    t_first = time.perf_counter() - t0
    t_warm = lmp.run(args.warmup) if args.warmup else 0.0
    # per-step estimate from the warm-up (run 0 + warm-up = warmup + 2 force evaluations; the first ones are slow)
    per_step = (t_first + t_warm) / (args.warmup + 2)
    steps = args.steps
    if args.budget and per_step * steps > args.budget:
        steps = max(2, min(steps, int(args.budget / per_step)))
        log(
            f"[{n_atoms} atoms] ~{per_step:.2f} s/step in the warm-up: timing {steps} steps instead of {args.steps} "
            f"(--budget {args.budget:g} s)"
        )
    row["steps"] = steps
    log(f"[{n_atoms} atoms] LAMMPS: timing run {steps}")
    wall = lmp.run(steps)
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    lammps_log = lmp.close()
    del lmp
    gc.collect()
    loop = lammps_log.get("loop_time_s")
    if loop is None or lammps_log.get("loop_steps") != steps:
        log(f"[{n_atoms} atoms] LAMMPS log has no loop time for the timed run: using the wall clock of `run {steps}`")
        loop = wall
    row["lammps"] = {
        "loop_time_s": loop,
        "run_wall_s": wall,
        "s_per_step": loop / steps,
        "atom_steps_per_s": n_atoms * steps / loop,
        **lammps_log,
    }

    # bare exported model on the same atoms
    log(f"[{n_atoms} atoms] bare model: {args.warmup + 3} warm-up + {steps} timed calls")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32  # as LAMMPS ran (the setting is per process)
    module = loaded.module.to(args.device) if args.device != "cpu" else loaded.module
    inputs = bare_inputs(frame, args.device)
    out = module(*inputs)
    bare_energy = float(out["energy"].detach())
    bare_forces = out["forces"].detach().cpu().numpy()
    del out
    # as many untimed calls as LAMMPS made before its timed loop: run 0, run WARMUP (setup + WARMUP steps), the
    # timed run's setup (TorchScript's profiling executor optimises the graph over the first calls)
    times = time_bare(module, inputs, args.device, args.warmup + 2, steps)
    bare_step = float(np.mean(times))
    row["bare"] = {
        "times_s": [round(t, 6) for t in times],
        "s_per_step": bare_step,
        "best_s": float(np.min(times)),
        "atom_steps_per_s": n_atoms / bare_step,
    }
    row["overhead_percent"] = 100.0 * (row["lammps"]["s_per_step"] - bare_step) / bare_step
    del inputs
    if args.device != "cpu":
        loaded.module.to("cpu")
        torch.cuda.empty_cache()

    # the same energy and forces through LAMMPS and the bare model (orthorhombic cells: LAMMPS frame = ASE frame)
    cell = atoms.cell.array
    if np.allclose(cell, np.diag(np.diag(cell))):
        row["check"] = {
            "energy_diff_meV_per_atom": 1000.0 * abs(lmp_energy - bare_energy) / n_atoms,
            "max_force_diff_eV_per_A": float(np.abs(lmp_forces - bare_forces).max()),
            "lammps_energy_eV": lmp_energy,
            "bare_energy_eV": bare_energy,
        }
    else:
        row["check"] = None  # ASE's lammps-data writer rotates a skewed cell: forces are not comparable directly

    # ASE MD
    if args.skip_ase:
        row["ase"] = {"skipped": "--skip-ase"}
    elif args.device != "cpu":
        row["ase"] = {"skipped": "PETCalculator evaluates on the CPU"}
    elif n_atoms > args.ase_max_atoms:
        row["ase"] = {"skipped": f"more than --ase-max-atoms {args.ase_max_atoms}"}
    else:
        log(f"[{n_atoms} atoms] ASE VelocityVerlet: {max(args.warmup, 1)} warm-up + {steps} timed steps")
        t = time_ase(atoms, loaded, args.warmup, steps)
        row["ase"] = {"time_s": t, "s_per_step": t / steps, "atom_steps_per_s": n_atoms * steps / t}
    gc.collect()
    return row


# ------------------------------------------------------------------------------------------------------- report


def machine_info(threads: int, device: str) -> dict:
    info = {
        "cpu": cpu_model(),
        "cores_available": available_cores(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "device": device,
        "gpu": None,
        "torch": torch.__version__,
        "torch_threads": threads,
        "petmd": petmd.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def fmt(value, spec: str, width: int) -> str:
    return f"{'—':>{width}}" if value is None else f"{value:>{width}{spec}}"


def table(report: dict) -> str:
    info, meta = report["machine"], report["model_metadata"]
    where = info["gpu"] if info["gpu"] else f"CPU, {info['torch_threads']} torch threads"
    lines = [
        f"pair_style pet MD throughput: {report['model']} ({meta.get('dtype')}, cutoff {meta.get('cutoff')} Å, "
        f"{meta.get('n_gnn_layers')} message-passing layers), {report['device']}",
        f"{info['cpu']}; {info['cores_available']} cores available; {where}; torch {info['torch']}; "
        f"LAMMPS {report['lammps_version']}; load avg {info['load_average_1min']}; {info['date']}",
        f"water: {report['frame']} of {report['data']} repeated k×k×k; NVE, {TIMESTEP_PS * 1000:g} fs, "
        f"{TEMPERATURE_K:g} K; {report['warmup']} warm-up steps (bare model: {report['warmup'] + 3} calls), "
        "then the timed steps",
        "",
        f"{'atoms':>6} {'steps':>5} {'LAMMPS at-st/s':>14} {'bare at-st/s':>12} {'overhead':>9} "
        f"{'ASE at-st/s':>11} {'LMP ms/st':>9} {'bare ms/st':>10} {'Pair %':>6} {'ghosts':>7}",
    ]
    notes = []
    for row in report["results"]:
        lmp, bare, ase = row["lammps"], row["bare"], row["ase"]
        ase_rate = ase.get("atom_steps_per_s")
        if "skipped" in ase:
            notes.append(f"ASE at {row['atoms']} atoms skipped: {ase['skipped']}")
        lines.append(
            f"{row['atoms']:>6} {row['steps']:>5} {lmp['atom_steps_per_s']:>14.1f} {bare['atom_steps_per_s']:>12.1f} "
            f"{row['overhead_percent']:>8.1f}% {fmt(ase_rate, '.1f', 11)} {1000 * lmp['s_per_step']:>9.1f} "
            f"{1000 * bare['s_per_step']:>10.1f} {fmt(lmp['section_percent'].get('pair'), '.1f', 6)} "
            f"{fmt(lmp.get('nghost'), '.0f', 7)}"
        )
    lines.append("")
    lines.append(
        "at-st/s = atom-steps/s; overhead = (LAMMPS − bare) / bare time per step; LAMMPS time = its loop "
        "time of the timed run; Pair % = pair_style share of it"
    )
    for row in report["results"]:
        c = row["check"]
        if c:
            lines.append(
                f"check {row['atoms']} atoms: LAMMPS vs bare model |ΔE| {c['energy_diff_meV_per_atom']:.2e} "
                f"meV/atom, max |ΔF| {c['max_force_diff_eV_per_A']:.2e} eV/Å"
            )
    lines.extend(notes)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help=f"exported model (default: {DEFAULT_MODEL.relative_to(REPO)} of the repository)",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[192, 1536, 12288],
        help=f"system sizes in atoms, each {BASE_ATOMS}·k³ (default 192 1536 12288)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed MD steps / model calls per size (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps / calls before them (default 2)")
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds the timed LAMMPS run of a size may take; fewer steps (≥ 2) where the warm-up "
        "says --steps would take longer (default 300; 0: always --steps)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="TF32 float32 matrix products on a CUDA device (pair_style pet ... tf32 yes; the bare model likewise)",
    )
    parser.add_argument("--skip-ase", action="store_true", help="do not time ASE MD")
    parser.add_argument(
        "--ase-max-atoms", type=int, default=1536, help="skip ASE MD above this many atoms (default 1536)"
    )
    parser.add_argument("--data", type=Path, default=None, help="extxyz(.gz) file (default: the SCAN water set)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures to FILE")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.budget < 0:
        parser.error("--budget must be at least 0")
    for n in args.sizes:
        replication(n)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        parser.error(f"--device must be cpu, cuda or cuda:N, not {args.device!r}")
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit(
                f"--device {args.device}: CUDA is not available to this torch ({torch.__version__}, "
                f"built {'without CUDA' if torch.version.cuda is None else 'for CUDA ' + torch.version.cuda})"
            )
        index = int(args.device.split(":")[1]) if ":" in args.device else 0
        if index >= torch.cuda.device_count():
            raise SystemExit(f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s)")
    args.model = args.model.expanduser().resolve()
    if not args.model.exists():
        raise SystemExit(
            f"model file {args.model} does not exist: run `make demo` (it exports models/pet-water.pt) "
            "or pass --model with an exported model (`petmd export`)"
        )
    data = (args.data or default_data_path()).expanduser()

    from petmd.loading import load_model

    try:
        loaded = load_model(args.model)
    except PetmdError as err:
        raise SystemExit(str(err)) from None
    if not isinstance(loaded.module, torch.jit.ScriptModule):
        raise SystemExit(
            f"{args.model} is a training checkpoint: pair_style pet needs an exported model (`petmd export`)"
        )
    base = find_structure(data, n_atoms=BASE_ATOMS, config_type=BASE_CONFIG_TYPE)
    try:
        check_species(base.numbers, loaded.atomic_numbers, f"{data}: {BASE_CONFIG_TYPE} frame")
    except PetmdError as err:
        raise SystemExit(str(err)) from None
    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    log(
        f"model {args.model}; base frame: first {BASE_CONFIG_TYPE} frame of {data}; {threads} threads; "
        f"device {args.device}"
    )

    results = []
    report = {
        "model": str(args.model),
        "model_metadata": {
            k: loaded.metadata.get(k)
            for k in (
                "dtype",
                "cutoff",
                "n_gnn_layers",
                "interaction_range",
                "species",
                "petmd_version",
                "torch_version",
            )
        },
        "device": args.device,
        "data": str(data),
        "frame": f"first {BASE_CONFIG_TYPE} frame",
        "warmup": args.warmup,
        "steps_requested": args.steps,
        "budget_s": args.budget,
        "timestep_ps": TIMESTEP_PS,
        "temperature_K": TEMPERATURE_K,
        "lammps_version": None,
        "machine": machine_info(threads, args.device),
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="petmd-lammps-bench-") as tmp:
        for n in args.sizes:
            results.append(measure(n, base, args, loaded, threads, Path(tmp)))
            torch.set_num_threads(threads)  # the plugin sets the same libtorch pool; keep it where asked
            report["lammps_version"] = results[0]["lammps_version"]
            if args.json:  # after each size: a run stopped by a time limit keeps what it measured
                args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    if args.json:
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
