"""Per-species baseline energies fitted by least squares on the training compositions."""

from __future__ import annotations

import numpy as np


def fit_composition_energies(counts: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """counts [n_frames, n_species], energies [n_frames] (eV) → e_s [n_species] (eV).

    Uses the minimum-norm least-squares solution, so compositions that are collinear (water: always 2 H per O)
    still give a well-defined baseline.
    """
    counts = np.asarray(counts, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return solution
