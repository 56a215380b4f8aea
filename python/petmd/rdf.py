"""Partial radial distribution functions g_AB(r) of periodic frames, with block-average errors, and reading the LAMMPS
dumps the examples write. Pairs come from vesin's neighbour list, so any cell shape and cutoffs beyond half the box
are handled (all periodic images are counted)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np
from ase import Atoms

from .errors import PetmdError


@dataclass
class RDF:
    pair: str
    r: np.ndarray  # bin centres, Å
    g: np.ndarray
    err: np.ndarray  # standard error of g from block averages
    coordination: np.ndarray  # running coordination number n_AB(r): B neighbours of an A within r
    n_blocks: int


def read_lammps_dump(path, types: Sequence[str] = ("O", "H")) -> List[Atoms]:
    """All frames of a LAMMPS text dump with `id type x y z` (or scaled/unwrapped coordinates; ASE's reader), LAMMPS
    type k mapped to the chemical symbol types[k-1]."""
    import ase.io

    path = Path(path)
    if not path.exists():
        raise PetmdError(f"dump file {path} does not exist")
    try:
        frames = ase.io.read(path, index=":", format="lammps-dump-text")
    except Exception as err:  # ASE raises many types for malformed input
        raise PetmdError(f"cannot read {path} as a LAMMPS text dump: {type(err).__name__}: {err}") from None
    out = []
    for k, atoms in enumerate(frames):
        lammps_types = atoms.arrays.get("type", atoms.numbers)
        if lammps_types.max() > len(types):
            raise PetmdError(f"{path}, frame {k}: LAMMPS type {lammps_types.max()} has no symbol; "
                             f"give one symbol per type (have {list(types)})")
        atoms = Atoms([types[t - 1] for t in lammps_types], atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        out.append(atoms)
    return out


def _pair_distances(atoms: Atoms, a: str, b: str, r_max: float) -> np.ndarray:
    from vesin import NeighborList

    i, j, d = NeighborList(cutoff=r_max, full_list=False).compute(
        atoms.positions, atoms.cell.array, atoms.pbc.tolist(), "ijd")
    symbols = np.array(atoms.get_chemical_symbols())
    si, sj = symbols[i], symbols[j]
    keep = ((si == a) & (sj == b)) | ((si == b) & (sj == a))
    return d[keep]


def partial_rdf(frames: Sequence[Atoms], a: str, b: str, r_max: float = 6.0, n_bins: int = 120,
                n_blocks: int = 5) -> RDF:
    """g_ab(r) averaged over ``frames`` (periodic, same composition), with the standard error over ``n_blocks``
    contiguous blocks of frames (fewer blocks if there are fewer frames; err is NaN with one block)."""
    if not frames:
        raise PetmdError("no frames to compute an RDF from")
    edges = np.linspace(0.0, r_max, n_bins + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    per_frame, densities = [], []
    for k, atoms in enumerate(frames):
        if not np.all(atoms.pbc):
            raise PetmdError(f"frame {k} is not periodic in all directions: g(r) needs a density")
        symbols = np.array(atoms.get_chemical_symbols())
        n_a, n_b = int((symbols == a).sum()), int((symbols == b).sum())
        if n_a == 0 or n_b == 0:
            raise PetmdError(f"frame {k} has no {a if n_a == 0 else b} atoms")
        volume = atoms.get_volume()
        pairs = n_a * (n_a - 1) / 2 if a == b else n_a * n_b  # distinct pairs, as the half neighbour list has them
        counts, _ = np.histogram(_pair_distances(atoms, a, b, r_max), bins=edges)
        per_frame.append(counts / (pairs / volume * shell))
        densities.append((n_b - 1 if a == b else n_b) / volume)  # neighbours an A atom can have
    per_frame = np.array(per_frame)
    n_blocks = max(1, min(n_blocks, len(frames)))
    blocks = np.array([chunk.mean(axis=0) for chunk in np.array_split(per_frame, n_blocks)])
    g = per_frame.mean(axis=0)
    err = blocks.std(axis=0, ddof=1) / np.sqrt(n_blocks) if n_blocks > 1 else np.full_like(g, np.nan)
    r = 0.5 * (edges[1:] + edges[:-1])
    coordination = np.cumsum(g * float(np.mean(densities)) * shell)
    return RDF(pair=f"{a}{b}", r=r, g=g, err=err, coordination=coordination, n_blocks=n_blocks)


def first_shell(rdf: RDF, after: float, window: float = 1.2):
    """(r of the highest peak beyond ``after`` Å, r of the minimum within ``window`` Å after it, coordination number
    there): the first coordination shell of a liquid, where the first peak is the highest (g_OO beyond 2 Å)."""
    peak = int(np.argmax(np.where(rdf.r > after, rdf.g, -np.inf)))
    search = (rdf.r >= rdf.r[peak]) & (rdf.r <= rdf.r[peak] + window)
    minimum = int(np.flatnonzero(search)[np.argmin(rdf.g[search])])
    return float(rdf.r[peak]), float(rdf.r[minimum]), float(rdf.coordination[minimum])
