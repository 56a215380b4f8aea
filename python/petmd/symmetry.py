"""Rotation grids and the symmetry error of a model.

PET is not exactly rotation invariant. Its symmetry error on a structure is measured as in Langer, Pozdnyakov &
Ceriotti (2024): the deviation of the plain prediction from its average over a rotation quadrature ("grid"), with
forces rotated back before averaging.

Grids (``rotation_grid``, built by petmd.rotations, which the exported model shares): the product quadrature over ZXZ
Euler angles, R = Rz(α) Rx(β) Rz(γ), with 2L−1 uniform α and γ and L Gauss–Legendre nodes in cos β, weighted by the
Gauss–Legendre weights: (2L−1)²·L rotations that average every Wigner-D function of degree 1 … 2L−2 to zero exactly.
Names: ``0`` (identity), ``i`` (identity and inversion),
``L`` (L ≥ 1, e.g. ``3``: 75 rotations), ``Li`` (each rotation also inverted), ``random:K`` (K Haar-random O(3)
elements, equal weights, seeded).
"""

from __future__ import annotations

import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from .batch import Frame, collate, random_rotations
from .data import INFO_GROUP_KEYS, load_frames
from .errors import PetmdError
from .loading import LoadedModel, load_model
from .rotations import check_grid_size, grid_size, named_grid, rotate, rotate_back
from .tables import group_table


@dataclass(frozen=True)
class RotationGrid:
    name: str
    matrices: np.ndarray  # [K, 3, 3] orthogonal, det ±1; acts on row vectors as x → x Qᵀ
    weights: np.ndarray  # [K], summing to 1

    @property
    def size(self) -> int:
        return len(self.weights)


def rotation_grid(spec: str, seed: int = 0) -> RotationGrid:
    spec = str(spec).strip()
    if spec.startswith("random:"):
        count = spec.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise PetmdError(f"rotation grid {spec!r}: random:K needs a positive integer K, e.g. random:16")
        k = int(count)
        try:
            check_grid_size(spec, k)
        except RuntimeError as err:
            raise PetmdError(str(err)) from None
        return RotationGrid(spec, random_rotations(k, np.random.default_rng(seed)), np.full(k, 1.0 / k))
    try:
        grid_size(spec)
    except RuntimeError as err:  # no grid name
        raise PetmdError(f"{err}, or random:K") from None
    try:
        matrices, weights = named_grid(spec)
    except RuntimeError as err:  # too large a grid
        raise PetmdError(str(err)) from None
    return RotationGrid(spec, matrices.numpy(), weights.numpy())


@dataclass
class GridEvaluation:
    """A model on every element of a grid for one structure; forces and virials rotated back to the input frame."""

    energies: np.ndarray  # [K] eV
    forces: np.ndarray  # [K, n, 3] eV/Å
    weights: np.ndarray  # [K]
    plain_energy: float  # the unrotated structure
    plain_forces: np.ndarray  # [n, 3]

    @property
    def mean_energy(self) -> float:
        return float(self.weights @ self.energies)

    @property
    def mean_forces(self) -> np.ndarray:
        return np.einsum("k,kia->ia", self.weights, self.forces)


def evaluate_on_grid(
    model: LoadedModel, frame: Frame, grid: RotationGrid, atoms_per_batch: int = 2000
) -> GridEvaluation:
    """All grid elements of ``frame`` (plus the plain structure), batched: as many rotated copies per model call
    as ``atoms_per_batch`` allows (all of them when it allows). A model in a symmetrized mode (grid:G, random, ecse)
    is evaluated as such, one rotated copy per call (a grid:G call batches its own grid; an ecse call already holds
    ~6 copies of every atom, and batching more ran slower)."""
    rotations = np.concatenate([np.eye(3)[None], grid.matrices])  # element 0: the plain prediction
    plain = model.symmetrize == "none"
    per_call = max(1, atoms_per_batch // max(frame.n_atoms, 1)) if plain else 1
    energy_parts, force_parts = [], []
    for start in range(0, len(rotations), per_call):
        chunk = rotations[start : start + per_call]
        if plain:
            out = model.batched(collate([frame] * len(chunk), rotations=chunk))
        else:
            out = model.each(
                [replace(frame, positions=rotate(frame.positions, q), cell=rotate(frame.cell, q)) for q in chunk]
            )
        energy_parts.append(out["energy"].detach().numpy())
        force_parts.append(rotate_back(out["forces"].detach().numpy().reshape(len(chunk), frame.n_atoms, 3), chunk))
    energies, forces = np.concatenate(energy_parts), np.concatenate(force_parts)
    return GridEvaluation(energies[1:], forces[1:], grid.weights, float(energies[0]), forces[0])


def frame_metrics(ev: GridEvaluation, n_atoms: int) -> Dict[str, float]:
    """Deviation of the plain prediction from the grid average, and the spread over the grid (eV, eV/Å)."""
    de = ev.plain_energy - ev.mean_energy
    df = ev.plain_forces - ev.mean_forces
    e_var = float(ev.weights @ (ev.energies - ev.mean_energy) ** 2)
    f_var = np.einsum("k,kia->ia", ev.weights, (ev.forces - ev.mean_forces) ** 2)
    return {
        "energy_deviation": de,
        "energy_deviation_per_atom": de / n_atoms,
        "force_mae": float(np.abs(df).mean()),
        "force_max": float(np.abs(df).max()),
        "energy_std": math.sqrt(max(e_var, 0.0)),
        "energy_std_per_atom": math.sqrt(max(e_var, 0.0)) / n_atoms,
        "force_std": float(np.sqrt(f_var.mean())),
    }


def _summary(rows: Sequence[Dict[str, Any]], n_atoms: Sequence[int]) -> Dict[str, Any]:
    if not rows:
        return {"n_frames": 0}
    get = lambda key: np.array([r[key] for r in rows])  # noqa: E731
    weights = np.asarray(n_atoms, dtype=float)
    return {
        "n_frames": len(rows),
        "energy_mae_mev_per_structure": 1e3 * float(np.abs(get("energy_deviation")).mean()),
        "energy_mae_mev_per_atom": 1e3 * float(np.abs(get("energy_deviation_per_atom")).mean()),
        # per force component, pooled over all atoms of all frames
        "force_mae_mev_per_A": 1e3 * float((get("force_mae") * weights).sum() / weights.sum()),
        "force_max_mev_per_A": 1e3 * float(get("force_max").max()),
        "energy_std_mev_per_atom": 1e3 * float(get("energy_std_per_atom").mean()),
        "force_std_mev_per_A": 1e3 * float(np.sqrt((get("force_std") ** 2 * weights).sum() / weights.sum())),
    }


def _check_cost(grid: RotationGrid, frame_atoms: List[int], progress: bool) -> None:
    """Says what the run will cost before it starts, and refuses one whose rotated forces cannot fit in memory."""
    largest = max(frame_atoms, default=0)
    stored = (grid.size + 1) * largest * 3 * 8 * 2  # forces of every rotated copy, then rotated back
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if stored > memory / 2:
        raise PetmdError(
            f"grid {grid.name}: the forces of its {grid.size} rotated copies of a {largest}-atom frame need "
            f"{stored / 2**30:.1f} GiB, more than half of this machine's {memory / 2**30:.0f} GiB: use a smaller grid "
            "(--grid 3i) or smaller frames"
        )
    if progress:
        print(
            f"grid {grid.name}: {grid.size} rotations + the plain structure on {len(frame_atoms)} frames = "
            f"{(grid.size + 1) * len(frame_atoms)} network evaluations of up to {largest} atoms",
            file=sys.stderr,
        )


def symmetry_error(
    model_path,
    data_path,
    grid: str = "3i",
    indices: Optional[Sequence[int]] = None,
    stride: int = 1,
    max_frames: Optional[int] = None,
    atoms_per_batch: int = 2000,
    seed: int = 0,
    progress: bool = True,
    symmetrize: Optional[str] = None,
) -> dict:
    """`petmd symmetry`: the model (in its symmetrization mode, or ``symmetrize``) against its grid average on every
    selected frame of a data file."""
    model = load_model(model_path)
    if symmetrize is not None:
        model.set_symmetrization(symmetrize)
    rotations = rotation_grid(grid, seed=seed)
    frames = load_frames(
        data_path,
        model.cutoff,
        stride=stride,
        max_frames=max_frames,
        labelled=False,
        model_numbers=model.atomic_numbers,
        progress=progress,
        indices=indices,
    )
    _check_cost(rotations, [frame.n_atoms for frame in frames], progress)
    file_index = list(indices) if indices is not None else list(range(0, stride * len(frames), stride))
    rows: List[Dict[str, Any]] = []
    groups: Dict[str, List[int]] = defaultdict(list)
    for k, frame in enumerate(
        tqdm(frames, desc=f"grid {grid} ({rotations.size} elements)", unit="frame", disable=not progress, leave=False)
    ):
        metrics = frame_metrics(evaluate_on_grid(model, frame, rotations, atoms_per_batch), frame.n_atoms)
        metrics.update(
            frame=file_index[k],
            n_atoms=frame.n_atoms,
            **{key: frame.info[key] for key in INFO_GROUP_KEYS if key in frame.info},
        )
        rows.append(metrics)
        for key in INFO_GROUP_KEYS:
            if key in frame.info:
                groups[f"{key}={frame.info[key]}"].append(k)
    n_atoms = [r["n_atoms"] for r in rows]
    result = {
        "grid": grid,
        "grid_size": rotations.size,
        "model": str(model_path),
        "data": str(data_path),
        "symmetrize": model.symmetrize,
    }
    result.update(_summary(rows, n_atoms))
    result["by_group"] = {
        name: _summary([rows[i] for i in members], [n_atoms[i] for i in members])
        for name, members in sorted(groups.items())
    }
    result["frames"] = rows
    return result


def format_table(result: dict) -> str:
    return group_table(
        [
            f"symmetry error of {result['model']} (mode {result['symmetrize']}) on {result['data']}: model vs grid "
            f"{result['grid']} ({result['grid_size']} elements)",
            "mean |E - E_grid| per structure and per atom (meV); |F - F_grid| per component (meV/Å); "
            "std of E over the grid (meV/atom)",
        ],
        [f"{'E meV/str':>10}", f"{'E meV/atom':>11}", f"{'F MAE':>8}", f"{'F max':>8}", f"{'E std/atom':>11}"],
        lambda r: (
            f"{r['energy_mae_mev_per_structure']:>10.4f} {r['energy_mae_mev_per_atom']:>11.5f} "
            f"{r['force_mae_mev_per_A']:>8.3f} {r['force_max_mev_per_A']:>8.2f} "
            f"{r['energy_std_mev_per_atom']:>11.5f}"
        ),
        result,
    )


def write_report(result: dict, folder) -> List[str]:
    """symmetry.json, frames.csv and symmetry-histogram.png in ``folder``; returns the paths written."""
    import csv
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "symmetry.json").write_text(json.dumps(result, indent=1))
    columns = [
        "frame",
        "n_atoms",
        *INFO_GROUP_KEYS,
        "energy_deviation",
        "energy_deviation_per_atom",
        "force_mae",
        "force_max",
        "energy_std",
        "energy_std_per_atom",
        "force_std",
    ]
    with open(folder / "frames.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result["frames"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    frames = result["frames"]
    axes[0].hist([1e3 * abs(r["energy_deviation_per_atom"]) for r in frames], bins=30, color="tab:blue")
    axes[0].set_xlabel(f"|E − E_grid| per atom (meV), grid {result['grid']}")
    axes[1].hist([1e3 * r["force_mae"] for r in frames], bins=30, color="tab:orange")
    axes[1].set_xlabel(f"mean |F − F_grid| per frame (meV/Å), grid {result['grid']}")
    for ax in axes:
        ax.set_ylabel("frames")
    fig.suptitle(f"symmetry error of {Path(result['model']).name} ({len(frames)} frames)")
    fig.tight_layout()
    fig.savefig(folder / "symmetry-histogram.png", dpi=120)
    plt.close(fig)
    return [str(folder / name) for name in ("symmetry.json", "frames.csv", "symmetry-histogram.png")]
