"""What a training step minimises and reports: the loss in the model's unit σ_F², the rotational-variance penalty,
the learning-rate schedule, and the error sums of validation."""

from __future__ import annotations

import math
from typing import Dict, Optional

import ase.units
import numpy as np
import torch

from .batch import Batch
from .rotations import rotate_back

EV_PER_A3_IN_GPA = 1.0 / ase.units.GPa  # stresses are computed in eV/Å³ and reported in GPa


def learning_rate(cfg, step: int, total_steps: int) -> float:
    t = cfg.training
    if step < t.warmup_steps:
        return t.learning_rate * (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return t.learning_rate
    if t.schedule == "step":
        return t.learning_rate * t.step_decay_factor ** ((step - t.warmup_steps) // t.step_decay_every)
    progress = min(1.0, (step - t.warmup_steps) / max(1, total_steps - t.warmup_steps))
    return t.learning_rate * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def training_loss(
    out: Dict[str, torch.Tensor],
    batch: Batch,
    sigma_f: float,
    energy_weight: float,
    force_weight: float,
    n_structures: Optional[int] = None,
    n_force_components: Optional[int] = None,
    stress_weight: float = 0.0,
    n_virial_components: Optional[int] = None,
):
    """(loss, per-structure energy error per atom, force errors). Both terms are in the model's own unit σ_F
    (eV/atom and eV/Å alike): normalising the energy by its much smaller residual spread σ_E made it ~10⁴ times
    stiffer, and its gradients kept the forces at zero. The squared errors are summed and divided by the counts of
    the whole batch (default: this batch's), so that processes holding parts of a batch add up to its loss. With
    ``stress_weight`` and ``out["virial"]``, the labelled structures' virial per atom joins it (virial_residual)."""
    assert batch.energy is not None and batch.forces is not None, "training batches are labelled"
    de = (out["energy"] - batch.energy) / batch.n_atoms
    df = out["forces"] - batch.forces
    n_e = de.numel() if n_structures is None else n_structures
    n_f = df.numel() if n_force_components is None else n_force_components
    loss = (energy_weight * (de**2).sum() / n_e + force_weight * (df**2).sum() / n_f) / sigma_f**2
    if stress_weight > 0 and batch.has_virial is not None and "virial" in out:
        dw = virial_residual(out, batch)
        n_w = dw.numel() if n_virial_components is None else n_virial_components
        if n_w:
            loss = loss + stress_weight * (dw**2).sum() / n_w / sigma_f**2
    return loss, de, df


def virial_residual(out: Dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """(W_model − W_reference)/N [n_labelled, 3, 3] (eV/atom) of the structures with a stress or virial label; the
    model's W is symmetrized, as the stress the ASE calculator and LAMMPS report is (PET's is not exactly
    symmetric)."""
    assert batch.virial is not None and batch.has_virial is not None
    w = out["virial"]
    w = 0.5 * (w + w.transpose(1, 2))
    mask = batch.has_virial
    return (w[mask] - batch.virial[mask]) / batch.n_atoms[mask].to(w.dtype)[:, None, None]


def rotational_variance(
    out: Dict[str, torch.Tensor],
    batch: Batch,
    rotations: np.ndarray,
    copies: int,
    n_structures_total: Optional[int] = None,
) -> torch.Tensor:
    """Mean over structures of the variance over their rotated copies of E/atom, plus the mean over structures of
    the mean over atoms and components of the variance of the forces rotated back (eV²/atom², eV²/Å²); structure
    s's copies are batch structures s·copies … s·copies + copies − 1. Means over ``n_structures_total`` structures
    (default: this batch's), so that processes holding parts of a batch add up to its penalty."""
    n_structures = batch.n_structures // copies
    energy = (out["energy"] / batch.n_atoms).view(n_structures, copies)
    q = torch.as_tensor(rotations, dtype=out["forces"].dtype, device=out["forces"].device)
    back = rotate_back(out["forces"].unsqueeze(1), q[batch.structure]).squeeze(1)
    force_terms = []
    start = 0
    for n in batch.n_atoms.view(n_structures, copies)[:, 0].tolist():
        f = back[start : start + n * copies].view(copies, n, 3)
        force_terms.append(f.var(dim=0, unbiased=False).mean())
        start += n * copies
    total = n_structures if n_structures_total is None else n_structures_total
    return (energy.var(dim=1, unbiased=False).sum() + torch.stack(force_terms).sum()) / total


def error_sums(batch: Batch, out: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Sums of absolute and squared errors (per-atom energy in eV/atom, force components in eV/Å)."""
    assert batch.energy is not None and batch.forces is not None, "validation batches are labelled"
    de = ((out["energy"].detach() - batch.energy) / batch.n_atoms).abs()
    df = (out["forces"].detach() - batch.forces).abs()
    sums = {
        "e_abs": float(de.sum()),
        "e_sq": float((de**2).sum()),
        "n_e": int(de.numel()),
        "f_abs": float(df.sum()),
        "f_sq": float((df**2).sum()),
        "n_f": int(df.numel()),
    }
    if "virial" in out and batch.has_virial is not None:
        ds = stress_residual(out, batch).abs()
        sums.update(s_abs=float(ds.sum()), s_sq=float((ds**2).sum()), n_s=int(ds.numel()))
    return sums


def stress_residual(out: Dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """σ_model − σ_reference [n_labelled, 3, 3] (eV/Å³) of the structures with a stress or virial label, σ = −W/V
    with the model's W symmetrized (ASE's convention: positive under tension)."""
    per_atom = virial_residual({"virial": out["virial"].detach()}, batch)
    mask = batch.has_virial
    assert batch.cells is not None
    volumes = torch.linalg.det(batch.cells[mask]).abs()
    return -per_atom * (batch.n_atoms[mask].to(per_atom.dtype) / volumes)[:, None, None]
