"""Water molecules from O–H geometry: each H belongs to its nearest O (periodic images included), so molecules are
found again in every frame and a proton that hops is simply counted. The orientation of a molecule is u, the unit
vector from O to the midpoint of its two H (the direction of its dipole)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .frames import TrajectoryFrame, minimum_image

BOND_SEARCH = 2.0  # Å: an H farther than this from every O belongs to no molecule


@dataclass
class Molecules:
    oxygens: np.ndarray  # atom indices of all O
    owner: np.ndarray  # per H (in the order of ``hydrogens``): index into ``oxygens``, -1 for none within 2 Å
    hydrogens: np.ndarray  # atom indices of all H
    whole: np.ndarray  # (n_O,) bool: O with exactly two H
    u: np.ndarray  # (n_O, 3) unit O→H–H-midpoint vectors (NaN where not whole)


def find_molecules(frame: TrajectoryFrame) -> Molecules:
    from vesin import NeighborList

    oxygens = np.flatnonzero(frame.symbols == "O")
    hydrogens = np.flatnonzero(frame.symbols == "H")
    owner = np.full(len(hydrogens), -1)
    u = np.full((len(oxygens), 3), np.nan)
    if len(oxygens) == 0 or len(hydrogens) == 0:
        return Molecules(oxygens, owner, hydrogens, np.zeros(len(oxygens), bool), u)
    points = np.concatenate([frame.positions[oxygens], frame.positions[hydrogens]])
    box = frame.cell if frame.pbc.any() else np.zeros((3, 3))
    i, j, d = NeighborList(cutoff=BOND_SEARCH, full_list=True).compute(points, box, frame.pbc.tolist(), "ijd")
    n_o = len(oxygens)
    keep = (i >= n_o) & (j < n_o)  # H → O pairs
    h, o, d = i[keep].astype(int) - n_o, j[keep].astype(int), d[keep]
    order = np.lexsort((d, h))  # by H, nearest O first
    h, o = h[order], o[order]
    first = np.ones(len(h), bool)
    first[1:] = h[1:] != h[:-1]
    owner[h[first]] = o[first]
    counts = np.bincount(owner[owner >= 0], minlength=n_o)
    whole = counts == 2
    if whole.any():
        bonds = minimum_image(
            frame.positions[hydrogens] - frame.positions[oxygens[np.maximum(owner, 0)]], frame.cell, frame.pbc
        )
        owned = owner >= 0
        midpoint = np.zeros((n_o, 3))
        np.add.at(midpoint, owner[owned], 0.5 * bonds[owned])
        norm = np.linalg.norm(midpoint[whole], axis=1, keepdims=True)
        u[whole] = midpoint[whole] / norm
    return Molecules(oxygens, owner, hydrogens, whole, u)
