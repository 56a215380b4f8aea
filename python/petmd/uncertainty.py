"""Calibrated uncertainty by last-layer prediction rigidity (LLPR; Bigi, Chong, Ceriotti & Grasselli 2024).

PET's energy is linear in its heads' final layers: E − baseline = F · w with F = Σ_i f_i, the summed last-layer
features of the atoms (PET.forward's ``features``). Treating w as the result of a ridge regression on the training
structures' F gives the prediction variance σ² = α² Fᵀ (C + ς² I)⁻¹ F, C = Σ_s F_s F_sᵀ / n over the training
structures; α is fitted on the validation frames so that their energy errors have unit variance in units of σ. The
exported file stores M = α² (C + ς² I)⁻¹ (ExportedPET's ``uncertainty_metric``): σ costs a quadratic form per
structure.

The local flag is a per-atom extrapolation score from the covariance of the training *atoms'* features, C_a =
Σ_i f_i f_iᵀ / n_atoms: γ_i = sqrt(f_iᵀ (C_a + ς² I)⁻¹ f_i) / m, with m the median of that quantity over the validation
frames' atoms, so that γ = 1 is a typical atom the model was checked on and γ ≫ 1 an environment unlike any it was
trained on (ExportedPET's ``extrapolation_metric`` = (C_a + ς² I)⁻¹ / m²). The structure covariance cannot serve per
atom: one atom's features are ~1/N of a structure's, so f_iᵀ M f_i is large for every atom alike.
docs/uncertainty.md has the measurements behind these choices and the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .batch import Frame, batches_by_atom_budget, collate
from .model import PET

# ς² relative to C's mean diagonal: keeps directions no training structure spans finite (their σ large)
DEFAULT_REGULARIZER = 1e-6


@dataclass
class Calibration:
    """The LLPR of one model, M = α² (C + ς² I)⁻¹, its per-atom extrapolation metric L, and how they were made."""

    metric: np.ndarray  # [D, D]
    extrapolation_metric: np.ndarray  # [D, D]
    alpha: float
    regularizer: float
    n_training_frames: int
    validation: dict  # calibration_figures on the validation frames α was fitted on, and the atoms' scores

    def metadata(self) -> dict:
        return {
            "method": "llpr",
            "features": int(self.metric.shape[0]),
            "alpha": self.alpha,
            "regularizer": self.regularizer,
            "training_frames": self.n_training_frames,
            "validation": self.validation,
        }


@dataclass
class FrameFeatures:
    summed: np.ndarray  # [n_frames, D]: F of each frame
    energies: np.ndarray  # [n_frames] predicted, eV
    atom_second_moment: np.ndarray  # [D, D]: Σ over all atoms of f_i f_iᵀ
    n_atoms: int
    atom_scores: Optional[np.ndarray]  # [n_atoms] sqrt(f_iᵀ L f_i) for the L given, else None


def frame_features(
    pet: PET,
    frames: Sequence[Frame],
    atoms_per_batch: int = 1000,  # on a CPU, 4000-atom batches took twice as long per atom
    progress: bool = False,
    desc: str = "features",
    extrapolation_metric: Optional[np.ndarray] = None,
) -> FrameFeatures:
    """The last-layer features of ``frames`` under the network as trained (float64), with the atoms' scores under
    ``extrapolation_metric`` when one is given."""
    rows: List[np.ndarray] = []
    energies: List[np.ndarray] = []
    scores: List[np.ndarray] = []
    second_moment: Optional[np.ndarray] = None
    batches = batches_by_atom_budget(frames, range(len(frames)), atoms_per_batch)
    for group in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        batch = collate([frames[i] for i in group])
        with torch.no_grad():
            out = pet(**batch.model_inputs(), compute_forces=False, compute_features=True)
        atoms = out["features"].numpy()
        summed = torch.zeros(batch.n_structures, atoms.shape[1], dtype=torch.float64)
        rows.append(summed.index_add(0, batch.structure, out["features"]).numpy())
        energies.append(out["energy"].numpy())
        second_moment = atoms.T @ atoms + (0.0 if second_moment is None else second_moment)
        if extrapolation_metric is not None:
            scores.append(np.sqrt(np.maximum(quadratic_form(extrapolation_metric, atoms), 0.0)))
    n_atoms = sum(f.n_atoms for f in frames)
    assert second_moment is not None
    return FrameFeatures(
        np.concatenate(rows),
        np.concatenate(energies),
        second_moment,
        n_atoms,
        np.concatenate(scores) if scores else None,
    )


def quadratic_form(metric: np.ndarray, features: np.ndarray) -> np.ndarray:
    """fᵀ M f for each row f of ``features``."""
    return np.einsum("sd,de,se->s", features, metric, features)


def regularized_inverse(second_moment: np.ndarray, count: int, regularizer: float) -> np.ndarray:
    """(C + ς² I)⁻¹ of C = second_moment / count, ς² = regularizer × C's mean diagonal; symmetric."""
    covariance = second_moment / count
    covariance = covariance + regularizer * float(np.mean(np.diag(covariance))) * np.eye(covariance.shape[0])
    inverse = np.linalg.inv(covariance)
    return 0.5 * (inverse + inverse.T)


def calibrate(
    pet: PET,
    training: Sequence[Frame],
    validation: Sequence[Frame],
    regularizer: float = DEFAULT_REGULARIZER,
    progress: bool = False,
) -> Calibration:
    """LLPR of ``pet`` from the training frames' features, α from the validation frames' energy errors, and the
    per-atom extrapolation metric from the training atoms, scaled on the validation atoms."""
    if not training or not validation:
        raise ValueError("the uncertainty calibration needs training frames and labelled validation frames")
    train = frame_features(pet, training, progress=progress, desc="training features")
    inverse = regularized_inverse(train.summed.T @ train.summed, len(training), regularizer)
    atom_inverse = regularized_inverse(train.atom_second_moment, train.n_atoms, regularizer)
    val = frame_features(
        pet, validation, progress=progress, desc="validation features", extrapolation_metric=atom_inverse
    )
    assert val.atom_scores is not None
    errors = val.energies - np.array([f.energy for f in validation])
    raw = quadratic_form(inverse, val.summed)
    alpha = math.sqrt(float(np.mean(errors**2 / raw)))
    sigma = alpha * np.sqrt(raw)
    n_atoms = np.array([f.n_atoms for f in validation])
    median_score = float(np.median(val.atom_scores))
    figures = calibration_figures(errors / n_atoms, sigma / n_atoms)
    scores = val.atom_scores / median_score
    figures["atom_extrapolation_p99"] = float(np.percentile(scores, 99))
    figures["atom_extrapolation_max"] = float(scores.max())
    return Calibration(alpha**2 * inverse, atom_inverse / median_score**2, alpha, regularizer, len(training), figures)


def calibration_figures(errors: np.ndarray, sigmas: np.ndarray) -> Dict[str, float]:
    """How well σ describes the errors (both in eV/atom, one per structure): the fractions within 1σ and 2σ (68 % and
    95 % for Gaussian errors of that σ), the mean Gaussian negative log-likelihood (σ and error in meV/atom), the
    root mean of (error/σ)² (1 when calibrated) and the medians of σ and |error|."""
    errors, sigmas = 1e3 * np.asarray(errors, dtype=float), 1e3 * np.asarray(sigmas, dtype=float)
    z = np.abs(errors) / sigmas
    return {
        "n_frames": int(len(z)),
        "within_1_sigma": float(np.mean(z < 1)),
        "within_2_sigma": float(np.mean(z < 2)),
        "nll_mev_per_atom": float(np.mean(0.5 * np.log(2 * np.pi * sigmas**2) + 0.5 * z**2)),
        "rms_z": float(np.sqrt(np.mean(z**2))),
        "median_sigma_mev_per_atom": float(np.median(sigmas)),
        "median_abs_error_mev_per_atom": float(np.median(np.abs(errors))),
    }


def calibration_plot(errors: np.ndarray, sigmas: np.ndarray, path: Path, title: Optional[str] = None) -> None:
    """|error| against σ (meV/atom, log-log) with the 1σ and 2σ lines, and the observed fraction within kσ against
    the Gaussian one: a calibrated σ follows the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.special import erf

    errors, sigmas = 1e3 * np.abs(np.asarray(errors)), 1e3 * np.asarray(sigmas)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.loglog(sigmas, np.maximum(errors, 1e-6), ".", ms=3, alpha=0.6)
    span = np.array([sigmas.min(), sigmas.max()])
    left.plot(span, span, "k-", lw=1, label="|error| = σ")
    left.plot(span, 2 * span, "k--", lw=1, label="|error| = 2σ")
    left.set_xlabel("σ (meV/atom)")
    left.set_ylabel("|energy error| (meV/atom)")
    left.legend()
    k = np.linspace(0, 3, 61)
    observed = [(errors / sigmas < x).mean() for x in k]
    right.plot(erf(k / np.sqrt(2)), observed, "-", label="these frames")
    right.plot([0, 1], [0, 1], "k:", lw=1, label="calibrated")
    right.set_xlabel("expected fraction within kσ (Gaussian)")
    right.set_ylabel("observed fraction within kσ")
    right.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
