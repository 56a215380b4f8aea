"""Neighbour lists (vesin) and the reverse-edge index that PET's message passing needs.

A structure's graph is the full list of directed edges i→j with integer cell shifts S, such that the edge vector is
x_ij = r_j − r_i + S·cell. Edges are symmetric: for every (i, j, S) the list holds (j, i, −S).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import vesin

from .errors import PetmdError

# The closest two atoms may come, Å: nearer, they are one atom listed twice, or a simulation that has blown up, and
# the model would extrapolate without a word. (cpp/domain_graph.h holds the same bound for LAMMPS.)
MIN_SEPARATION = 0.1


def neighbor_graph(positions, cell, pbc, cutoff: float) -> Tuple[np.ndarray, np.ndarray]:
    """Full neighbour list within ``cutoff``: returns (edge_index [2, E] int64, cell_shifts [E, 3] int64).

    Works for triclinic cells, cells smaller than 2·cutoff (several images of one atom are distinct edges, an atom
    can neighbour its own image), mixed periodicity, and molecules (pbc all False).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    _check_geometry(positions, cell, pbc)
    box = _box_for_vesin(cell, pbc, positions, cutoff)
    if len(positions) == 0:
        return np.zeros((2, 0), np.int64), np.zeros((0, 3), np.int64)
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts, distances = nl.compute(points=positions, box=box, periodic=pbc.tolist(), quantities="ijSd")
    if len(distances) and distances.min() < MIN_SEPARATION:
        k = int(np.argmin(distances))
        raise PetmdError(
            f"atoms {i[k]} and {j[k]} are {distances[k]:.3g} Å apart, closer than {MIN_SEPARATION} Å: an atom listed "
            "twice, or a structure that has blown up"
        )
    return np.stack([i, j]).astype(np.int64), np.asarray(shifts, dtype=np.int64).reshape(-1, 3)


def _check_geometry(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """Positions and cell a neighbour list can be built from, or a PetmdError that says what is wrong."""
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if len(bad):
        raise PetmdError(f"atom {bad[0]} has a non-finite position {positions[bad[0]].tolist()}")
    if not np.isfinite(cell).all():
        raise PetmdError(f"the cell has non-finite entries: {cell.tolist()}")
    for d in range(3):
        if pbc[d] and np.linalg.norm(cell[d]) < 1e-12:
            raise PetmdError(
                f"periodic along cell vector {'abc'[d]}, but that vector is zero: give the cell or pbc False"
            )
    if pbc.all() and abs(np.linalg.det(cell)) < 1e-9 * max(np.linalg.norm(cell, axis=1).prod(), 1e-300):
        raise PetmdError(f"the periodic cell {cell.tolist()} has no volume (its vectors lie in a plane)")


def _box_for_vesin(cell: np.ndarray, pbc: np.ndarray, positions: np.ndarray, cutoff: float) -> np.ndarray:
    # vesin needs a non-degenerate box only along periodic directions; a zero cell vector along a non-periodic
    # direction (ASE's default for molecules and slabs) is replaced by a perpendicular one (its shift is always 0).
    if not pbc.any():
        return np.zeros((3, 3))
    box = cell.copy()
    for d in range(3):
        if not pbc[d] and np.linalg.norm(box[d]) < 1e-12:
            others = [box[k] for k in range(3) if k != d]
            normal = np.cross(others[0], others[1])
            if np.linalg.norm(normal) < 1e-12:
                normal = np.eye(3)[d]
            extent = np.ptp(positions, axis=0).max() if len(positions) else 0.0
            box[d] = normal / np.linalg.norm(normal) * (extent + 2 * cutoff + 1.0)
    return box


def reverse_edge_index(edge_index: torch.Tensor, cell_shifts: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """For every edge (i, j, S) the position of its reverse (j, i, −S) in the same list.

    Raises if the list is not symmetric or holds duplicate edges. TorchScript-compatible: the exported model calls
    it on the edges LAMMPS passes in.
    """
    n_edges = edge_index.shape[1]
    if n_edges == 0:
        return torch.zeros(0, dtype=torch.long, device=edge_index.device)
    # one int64 key per edge: (i·n + j) and the shift packed in 6 bits per component (|S| ≤ 31)
    if bool((cell_shifts.abs() > 31).any()):
        raise RuntimeError("cell shifts larger than 31 cells are not supported: use a larger simulation cell")
    if n_atoms > 5_000_000:
        raise RuntimeError("more than 5,000,000 atoms (local + ghost) in one model call are not supported")
    i = edge_index[0]
    j = edge_index[1]
    if bool((edge_index.min() < 0).item()) or bool((edge_index.max() >= n_atoms).item()):
        raise RuntimeError("edge_index refers to atoms outside 0..n_atoms-1")
    if bool(((i == j) & (cell_shifts == 0).all(dim=1)).any()):
        raise RuntimeError("the edge list holds an atom paired with itself (i == j with zero cell shift)")
    s = cell_shifts + 32
    span = 64
    fwd_shift = (s[:, 0] * span + s[:, 1]) * span + s[:, 2]
    rs = 64 - s
    rev_shift = (rs[:, 0] * span + rs[:, 1]) * span + rs[:, 2]
    width = span * span * span
    fwd_key = (i * n_atoms + j) * width + fwd_shift
    rev_key = (j * n_atoms + i) * width + rev_shift
    sorted_keys, order = torch.sort(fwd_key)
    if n_edges > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
        raise RuntimeError("the edge list holds the same edge (i, j, shift) twice")
    where = torch.searchsorted(sorted_keys, rev_key).clamp(max=n_edges - 1)
    if not bool((sorted_keys[where] == rev_key).all()):
        raise RuntimeError(
            "the edge list is not symmetric: for every edge (i, j, shift) the reverse edge (j, i, -shift) "
            "must be present (use a full neighbour list)"
        )
    return order[where]
