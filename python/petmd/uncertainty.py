"""Calibrated uncertainty by last-layer prediction rigidity (LLPR; Bigi, Chong, Ceriotti & Grasselli 2024).

PET's energy is linear in its heads' final layers: E − baseline = F · w with F = Σ_i f_i, the summed last-layer
features of the atoms (PET.forward's ``features``). Treating w as the result of a ridge regression on the training
structures' F gives the prediction variance σ² = α² Fᵀ (C + ς² I)⁻¹ F, C = Σ_s F_s F_sᵀ / n over the training
structures; α is fitted on the validation frames so that their energy errors have unit variance in units of σ. The
exported file stores M = α² (C + ς² I)⁻¹ (ExportedPET's ``uncertainty_metric``): σ costs a quadratic form per
structure, and σ_i = sqrt(f_iᵀ M f_i), the uncertainty of atom i's environment on its own, one per atom — the local
extrapolation flag. docs/uncertainty.md has the measurements behind the choice and the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from .batch import Frame, batches_by_atom_budget, collate
from .model import PET

# ς² relative to C's mean diagonal: keeps directions no training structure spans finite (their σ large)
DEFAULT_REGULARIZER = 1e-6


@dataclass
class Calibration:
    """The LLPR of one model: M = α² (C + ς² I)⁻¹ and how it was made."""

    metric: np.ndarray  # [D, D]
    alpha: float
    regularizer: float
    n_training_frames: int
    validation: dict  # calibration_figures on the validation frames α was fitted on

    def metadata(self) -> dict:
        return {
            "method": "llpr",
            "features": int(self.metric.shape[0]),
            "alpha": self.alpha,
            "regularizer": self.regularizer,
            "training_frames": self.n_training_frames,
            "validation": self.validation,
        }


def frame_features(
    pet: PET, frames: Sequence[Frame], atoms_per_batch: int = 4000, progress: bool = False, desc: str = "features"
) -> Tuple[np.ndarray, np.ndarray]:
    """(F [n_frames, D] summed last-layer features, predicted energies [n_frames] in eV) of the network as
    trained, in float64."""
    rows: List[np.ndarray] = []
    energies: List[np.ndarray] = []
    batches = batches_by_atom_budget(frames, range(len(frames)), atoms_per_batch)
    for group in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        batch = collate([frames[i] for i in group])
        with torch.no_grad():
            out = pet(**batch.model_inputs(), compute_forces=False, compute_features=True)
        summed = torch.zeros(batch.n_structures, out["features"].shape[1], dtype=torch.float64)
        rows.append(summed.index_add(0, batch.structure, out["features"]).numpy())
        energies.append(out["energy"].numpy())
    return np.concatenate(rows), np.concatenate(energies)


def quadratic_form(metric: np.ndarray, features: np.ndarray) -> np.ndarray:
    """fᵀ M f for each row f of ``features``."""
    return np.einsum("sd,de,se->s", features, metric, features)


def calibrate(
    pet: PET,
    training: Sequence[Frame],
    validation: Sequence[Frame],
    regularizer: float = DEFAULT_REGULARIZER,
    progress: bool = False,
) -> Calibration:
    """LLPR of ``pet`` from the training frames' features, α from the validation frames' energy errors."""
    if not training or not validation:
        raise ValueError("the uncertainty calibration needs training frames and labelled validation frames")
    f_train, _ = frame_features(pet, training, progress=progress, desc="training features")
    covariance = f_train.T @ f_train / len(training)
    covariance += regularizer * float(np.mean(np.diag(covariance))) * np.eye(covariance.shape[0])
    inverse = np.linalg.inv(covariance)
    inverse = 0.5 * (inverse + inverse.T)
    f_val, predicted = frame_features(pet, validation, progress=progress, desc="validation features")
    errors = predicted - np.array([f.energy for f in validation])
    raw = quadratic_form(inverse, f_val)
    alpha = math.sqrt(float(np.mean(errors**2 / raw)))
    sigma = alpha * np.sqrt(raw)
    n_atoms = np.array([f.n_atoms for f in validation])
    return Calibration(
        alpha**2 * inverse,
        alpha,
        regularizer,
        len(training),
        calibration_figures(errors / n_atoms, sigma / n_atoms),
    )


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
