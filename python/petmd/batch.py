"""Structures with their neighbour graphs, and batches of them as the model's input tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .neighbors import neighbor_graph, reverse_edge_index
from .rotations import rotate


@dataclass
class Frame:
    """One structure with its neighbour graph; energy/forces are the reference labels (None when unlabelled)."""

    positions: np.ndarray  # [n, 3] Å
    numbers: np.ndarray  # [n] atomic numbers
    cell: np.ndarray  # [3, 3] rows are cell vectors
    pbc: np.ndarray  # [3] bool
    edge_index: np.ndarray  # [2, E]
    cell_shifts: np.ndarray  # [E, 3]
    reverse: np.ndarray  # [E]
    energy: Optional[float] = None  # eV per cell
    forces: Optional[np.ndarray] = None  # [n, 3] eV/Å
    info: Dict[str, str] = field(default_factory=dict)
    # [3, 3] eV: W = −∂E/∂ε = −V σ (σ: ASE's stress); None where the frame has no stress/virial label
    virial: Optional[np.ndarray] = None

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)


def make_frame(positions, numbers, cell, pbc, cutoff: float, energy=None, forces=None, info=None, virial=None) -> Frame:
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    edge_index, shifts = neighbor_graph(positions, cell, pbc, cutoff)
    reverse = reverse_edge_index(torch.from_numpy(edge_index), torch.from_numpy(shifts), len(positions)).numpy()
    return Frame(
        positions=positions,
        numbers=np.asarray(numbers, dtype=np.int64),
        cell=cell,
        pbc=pbc,
        edge_index=edge_index,
        cell_shifts=shifts,
        reverse=reverse,
        energy=None if energy is None else float(energy),
        forces=None if forces is None else np.asarray(forces, dtype=np.float64),
        info=dict(info or {}),
        virial=None if virial is None else np.asarray(virial, dtype=np.float64).reshape(3, 3),
    )


def frame_from_atoms(atoms, cutoff: float, energy=None, forces=None, info=None, virial=None) -> Frame:
    cell = atoms.cell.array
    return make_frame(atoms.positions, atoms.numbers, cell, atoms.pbc, cutoff, energy, forces, info, virial)


@dataclass
class Batch:
    positions: torch.Tensor
    numbers: torch.Tensor
    edge_index: torch.Tensor
    shift_vectors: torch.Tensor
    reverse: torch.Tensor
    structure: torch.Tensor
    n_structures: int
    n_atoms: torch.Tensor  # [n_structures]
    energy: Optional[torch.Tensor]  # [n_structures] reference, eV
    forces: Optional[torch.Tensor]  # [N, 3] reference, eV/Å
    virial: Optional[torch.Tensor] = None  # [n_structures, 3, 3] reference W (eV), 0 where has_virial is False
    has_virial: Optional[torch.Tensor] = None  # [n_structures] bool; None: no structure of the batch has one
    cells: Optional[torch.Tensor] = None  # [n_structures, 3, 3] rows are cell vectors (rotated with the structure)

    def to(self, device) -> "Batch":
        moved: Dict[str, Any] = {
            k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()
        }
        return Batch(**moved)

    def model_inputs(self) -> dict:
        return dict(
            positions=self.positions,
            atomic_numbers=self.numbers,
            edge_index=self.edge_index,
            shift_vectors=self.shift_vectors,
            reverse=self.reverse,
            structure=self.structure,
            n_structures=self.n_structures,
        )


def collate(frames: Sequence[Frame], rotations: Optional[np.ndarray] = None) -> Batch:
    """Concatenate frames into one disconnected graph (float64 positions). ``rotations`` [B, 3, 3] (orthogonal,
    det ±1) are applied to positions, cells and reference forces (row vectors: x → x Qᵀ) and virials (W → Q W Qᵀ)."""
    positions, shift_vectors, forces, cells = [], [], [], []
    edges, reverse, structure = [], [], []
    atom_offset = edge_offset = 0
    for k, f in enumerate(frames):
        q = None if rotations is None else rotations[k]
        pos = f.positions if q is None else rotate(f.positions, q)
        cell = f.cell if q is None else rotate(f.cell, q)
        positions.append(pos)
        cells.append(cell)
        shift_vectors.append(f.cell_shifts @ cell)
        edges.append(f.edge_index + atom_offset)
        reverse.append(f.reverse + edge_offset)
        structure.append(np.full(f.n_atoms, k, dtype=np.int64))
        if f.forces is not None:
            forces.append(f.forces if q is None else rotate(f.forces, q))
        atom_offset += f.n_atoms
        edge_offset += f.edge_index.shape[1]
    labelled = all(f.energy is not None for f in frames)
    has_forces = len(forces) == len(frames)
    virial, has_virial = None, None
    if any(f.virial is not None for f in frames):
        virials = np.zeros((len(frames), 3, 3))
        for k, f in enumerate(frames):
            if f.virial is not None:
                q = np.eye(3) if rotations is None else rotations[k]
                virials[k] = q @ f.virial @ q.T
        virial = torch.from_numpy(virials)
        has_virial = torch.tensor([f.virial is not None for f in frames])
    return Batch(
        positions=torch.from_numpy(np.concatenate(positions)),
        numbers=torch.from_numpy(np.concatenate([f.numbers for f in frames])),
        edge_index=torch.from_numpy(np.concatenate(edges, axis=1)),
        shift_vectors=torch.from_numpy(np.concatenate(shift_vectors)),
        reverse=torch.from_numpy(np.concatenate(reverse)),
        structure=torch.from_numpy(np.concatenate(structure)),
        n_structures=len(frames),
        n_atoms=torch.tensor([f.n_atoms for f in frames]),
        energy=torch.tensor([f.energy for f in frames], dtype=torch.float64) if labelled else None,
        forces=torch.from_numpy(np.concatenate(forces)) if has_forces else None,
        virial=virial,
        has_virial=has_virial,
        cells=torch.from_numpy(np.stack(cells)),
    )


def batches_by_atom_budget(frames: Sequence[Frame], order: Sequence[int], budget: int) -> List[List[int]]:
    """Split ``order`` into consecutive groups whose atom count stays within ``budget`` (a larger frame goes alone)."""
    groups: List[List[int]] = []
    current: List[int] = []
    atoms = 0
    for idx in order:
        n = frames[idx].n_atoms
        if current and atoms + n > budget:
            groups.append(current)
            current, atoms = [], 0
        current.append(int(idx))
        atoms += n
    if current:
        groups.append(current)
    return groups


def random_rotations(n: int, generator: np.random.Generator, inversion: bool = True) -> np.ndarray:
    """n uniformly random rotations (Haar measure, via QR of a Gaussian matrix), each inverted with probability ½."""
    a = generator.standard_normal((n, 3, 3))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0] *= -1.0  # proper rotations
    if inversion:
        flip = generator.random(n) < 0.5
        q[flip] *= -1.0
    return q
