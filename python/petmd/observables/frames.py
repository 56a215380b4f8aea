"""One frame of a trajectory as the observables see it, and the LAMMPS box conventions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class TrajectoryFrame:
    source: str  # "file:line" (LAMMPS dump) or "file, frame k": where to look when something is wrong
    step: Optional[int]
    time: Optional[float]  # ps
    symbols: np.ndarray  # (N,) chemical symbols, atoms sorted by id where ids exist
    positions: np.ndarray  # (N, 3) Å; unwrapped if ``unwrapped``
    unwrapped: bool  # positions continuous in time (image flags applied, or written unwrapped)
    cell: np.ndarray  # (3, 3), rows are the cell vectors, Å
    pbc: np.ndarray  # (3,) bool
    velocities: Optional[np.ndarray] = None  # Å/ps
    forces: Optional[np.ndarray] = None  # eV/Å
    energy: Optional[float] = None  # potential energy, eV

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell)))


def lammps_cell(bounds: np.ndarray, tilts) -> tuple:
    """(origin, cell) from a dump's BOX BOUNDS lines: ``bounds`` (3, 2) of lo/hi bounds, ``tilts`` (xy, xz, yz) or
    None. Triclinic dumps give the bounding box of the tilted cell; LAMMPS's own formulas undo that."""
    (xlo, xhi), (ylo, yhi), (zlo, zhi) = bounds
    xy, xz, yz = tilts if tilts is not None else (0.0, 0.0, 0.0)
    xlo -= min(0.0, xy, xz, xy + xz)
    xhi -= max(0.0, xy, xz, xy + xz)
    ylo -= min(0.0, yz)
    yhi -= max(0.0, yz)
    cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
    return np.array([xlo, ylo, zlo]), cell


def minimum_image(vectors: np.ndarray, cell: np.ndarray, pbc) -> np.ndarray:
    """Shortest periodic images of displacement ``vectors`` (..., 3). Exact for vectors shorter than half the
    smallest cell height, which is all that is asked of it here (bonds, moves between frames)."""
    pbc = np.asarray(pbc, bool)
    if not pbc.any():
        return vectors
    fractional = vectors @ np.linalg.inv(cell)
    fractional[..., pbc] -= np.round(fractional[..., pbc])
    return fractional @ cell
