"""Starting structures for the examples: liquid water from the SCAN set, proton-disordered ice Ih from GenIce2, and
LAMMPS data files of them (type 1 = O, type 2 = H)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from ..errors import PetmdError

TYPES = ("O", "H")  # LAMMPS atom types 1 and 2, as in `pair_coeff * * O H`
# Å: where the liquid examples' H–H wall starts (examples/pair-pet.lammps, `hhwall`). No frame of the SCAN set has two
# H closer than 1.32 Å; below ~1.25 Å the shipped models have a spurious deep region that 300 K liquid water reaches
# within a few ps (docs/study.md).
HH_WALL = 1.3


# relative difference of cube edge within which a SCAN liquid frame can start a replica of the first (scaled onto its
# cell, which stretches O–H bonds by at most this fraction, ~0.005 Å)
LIQUID_START_EDGE_TOLERANCE = 0.005


def liquid_water(replicate: Sequence[int] = (1, 1, 1), data_path=None, start: int = 0) -> Atoms:
    """A 64-molecule liquid frame (multithermal) of the SCAN set, replicated ``replicate`` times along the cell
    vectors (3 × 8 × 8 × 8 = 98,304 atoms for (8, 8, 8)). ``start`` 0 is the first frame (12.38 Å cube); ``start`` k
    the k-th later frame whose cube edge is within 0.5 % of the first's, scaled onto the first's cell: independent
    starting points of the same density, for replicas."""
    from ..data import default_data_path, iter_structures, no_structure

    path = data_path or default_data_path()
    if start < 0:
        raise PetmdError(f"liquid water start {start}: give 0 (the first frame) or a positive index")
    frames = iter_structures(path, n_atoms=192, config_type="multithermal")
    first = next(frames, None)
    if first is None:
        raise no_structure(path, 192, config_type="multithermal")
    found, atoms = 0, first
    edge = first.cell.lengths()
    for frame in frames if start else ():
        if np.all(np.abs(frame.cell.lengths() / edge - 1.0) <= LIQUID_START_EDGE_TOLERANCE):
            found += 1
            if found == start:
                atoms = frame.copy()
                atoms.set_cell(first.cell, scale_atoms=True)
                break
    if found < start:
        raise PetmdError(
            f"{path} has only {found} liquid frames besides the first within {LIQUID_START_EDGE_TOLERANCE:.1%} of its "
            f"cube edge: liquid water start {start} does not exist; use 0-{found}"
        )
    atoms = Atoms(atoms.get_chemical_symbols(), atoms.positions, cell=atoms.cell, pbc=True)
    return atoms.repeat(tuple(int(n) for n in replicate))


def ice_ih(replicate: Sequence[int], seed: int) -> Atoms:
    """Proton-disordered ice Ih from GenIce2 (`genice2 1h --rep A B C --seed S`): 16 molecules per orthorhombic unit
    cell, a proton arrangement obeying the ice rules with zero net dipole, chosen by ``seed``; density 0.92 g/cm³."""
    exe = shutil.which("genice2", path=str(Path(sys.executable).parent)) or shutil.which("genice2")
    if exe is None:
        raise PetmdError("genice2 not found: pip install genice2 (it builds the proton-disordered ice cells)")
    cmd = [exe, "1h", "--rep", *map(str, replicate), "--seed", str(seed), "--format", "exyz", "--quiet"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise PetmdError(f"{' '.join(cmd)} failed: {result.stderr.strip()[-500:]}")
    return parse_genice_exyz(result.stdout)


def parse_genice_exyz(text: str) -> Atoms:
    """GenIce's "exyz" output: '#' comments, atom count, '%PBC', 'El x y z' lines, then Vector1-3 (Å)."""
    symbols, positions, cell = [], [], {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or line.startswith("#") or fields[0] == "%PBC":
            continue
        if fields[0].startswith("Vector"):
            cell[fields[0]] = [float(v) for v in fields[1:4]]
        elif len(fields) == 4 and fields[0] in ("O", "H"):
            symbols.append(fields[0])
            positions.append([float(v) for v in fields[1:4]])
    if len(cell) != 3 or not symbols:
        raise PetmdError("could not read GenIce's exyz output (no atoms or no Vector1-3 lines)")
    atoms = Atoms(symbols, np.array(positions), cell=[cell["Vector1"], cell["Vector2"], cell["Vector3"]], pbc=True)
    atoms.wrap()
    return atoms


def write_lammps_data(atoms: Atoms, path: Path, box_padding: float = 10.0) -> Path:
    """A LAMMPS `atom_style atomic` data file (ASE's writer) with types O = 1, H = 2 and their masses. A non-periodic
    system gets a box of its extent ± ``box_padding`` Å (for `boundary f f f`)."""
    import ase.io

    symbols = set(atoms.get_chemical_symbols())
    if not symbols <= set(TYPES):
        raise PetmdError(f"{path}: only O and H are water species; got {sorted(symbols - set(TYPES))}")
    if not atoms.pbc.any():
        atoms = atoms.copy()
        atoms.positions -= atoms.positions.min(axis=0) - box_padding
        atoms.cell = np.ptp(atoms.positions, axis=0) + 2 * box_padding
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, atoms, format="lammps-data", specorder=list(TYPES), masses=True, units="metal")
    return path
