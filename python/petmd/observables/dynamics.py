"""Time correlations read in one pass: oxygen mean-squared displacement and diffusion coefficient, orientation
autocorrelation c_uu(t) = ⟨u(0)·u(t)⟩, and the angular momentum and torque of a single molecule.

Time origins are kept in a ring buffer up to the largest lag, so memory is bounded by (lags / origin spacing) ×
molecules, not by the trajectory length. Each origin's contributions are booked to the block that holds the origin."""

from __future__ import annotations

from collections import deque
from typing import Callable, Dict, List, Optional

import numpy as np

from .blocks import BlockSeries, ratio_estimate, slope_estimate
from .frames import TrajectoryFrame, minimum_image

MAX_ORIGINS = 100  # origins held at once: sets memory (origins × atoms × 3 floats)
KB_EV = 8.617333262e-5  # eV/K
AMU_A2_PS2_EV = 1.0364269656262175e-4  # 1 amu Å²/ps² in eV


class Unwrapper:
    """Positions continuous in time: as given when the frame says they are (image flags, xu), else by adding the
    minimum-image displacement since the previous frame (needs moves < half a box between frames)."""

    def __init__(self):
        self.previous: Optional[np.ndarray] = None

    def __call__(self, frame: TrajectoryFrame) -> np.ndarray:
        if frame.unwrapped or self.previous is None or not frame.pbc.any():
            current = frame.positions.copy()
        else:
            current = self.previous + minimum_image(frame.positions - self.previous, frame.cell, frame.pbc)
        self.previous = current
        return current


class TimeCorrelation:
    """Σ f(x(t0), x(t0 + τ)) and its count for lags τ = 0 … max_lag frames; f returns (sum, count). Every frame is
    an origin until MAX_ORIGINS are held, then every second one, and so on: short runs use all origins, long ones
    keep bounded memory, and the result does not depend on a guess of the run's length."""

    def __init__(self, max_lag: int, f: Callable):
        self.max_lag = max_lag
        self.origin_every = 1
        self.f = f
        self.origins: deque = deque()
        self.series = BlockSeries((2, max_lag + 1))

    def add(self, k: int, data):
        self.series.new_frame(k)
        while self.origins and k - self.origins[0][0] > self.max_lag:
            self.origins.popleft()
        if k % self.origin_every == 0:
            self.origins.append((k, data))
            if len(self.origins) > MAX_ORIGINS:
                self.origin_every *= 2
                self.origins = deque(o for o in self.origins if o[0] % self.origin_every == 0)
        for k0, data0 in self.origins:
            total, count = self.f(data0, data)
            self.series.add(k0, total, where=(0, k - k0))
            self.series.add(k0, count, where=(1, k - k0))

    def result(self, n_blocks: int):
        """(lags in frames with data, value, err, per-block values) of Σf/count."""
        blocks = self.series.blocks(n_blocks)
        value, err = ratio_estimate(blocks[:, 0], blocks[:, 1])
        has_data = blocks[:, 1].sum(axis=0) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            per_block = blocks[:, 0] / blocks[:, 1]
        lags = np.flatnonzero(has_data)
        return lags, value[lags], err[lags], per_block[:, lags]


def squared_displacement(origin, current):
    (x0, com0), (x1, com1) = origin, current
    d = (x1 - x0) - (com1 - com0)  # displacement relative to the centre of mass: a drifting system is not diffusion
    return float(np.einsum("ij,ij->", d, d)), float(len(d))


def orientation_overlap(u0, u1):
    dots = np.einsum("ij,ij->i", u0, u1)
    valid = np.isfinite(dots)  # a molecule that is not whole (ion, proton in transit) at either time is left out
    return float(dots[valid].sum()), float(valid.sum())


def diffusion_from_msd(lags_ps: np.ndarray, msd: np.ndarray, per_block: np.ndarray, window) -> dict:
    """D = slope/6 of the MSD over ``window`` (ps, ps); error from the spread of the per-block slopes."""
    inside = (lags_ps >= window[0]) & (lags_ps <= window[1])
    if inside.sum() < 3:
        return {
            "value": None,
            "err": None,
            "fit_ps": list(window),
            "why_missing": "fewer than 3 lags in the fit window: a longer trajectory or more frames are needed",
        }
    t = lags_ps[inside]
    value = float(np.polyfit(t, msd[inside], 1)[0] / 6.0)
    slopes = [np.polyfit(t, row[inside], 1)[0] / 6.0 for row in per_block if np.all(np.isfinite(row[inside]))]
    err = float(np.std(slopes, ddof=1) / np.sqrt(len(slopes))) if len(slopes) > 1 else None
    return {"value": value, "err": err, "fit_ps": [float(t[0]), float(t[-1])], "n_blocks": len(per_block)}


def yeh_hummer_note(box_length: float, temperature: Optional[float]) -> dict:
    """The finite-size correction of D in a cubic periodic box (Yeh & Hummer 2004), with the shear viscosity of
    real water at 298 K as the example value: the model's own viscosity is what really belongs there."""
    out = {
        "note": "D in a periodic box is smaller than in bulk by ξ k_B T / (6π η L) (Yeh & Hummer 2004, "
        "ξ = 2.837297, cubic box): add it, with the model's viscosity η, before comparing with experiment "
        "or with runs in other box sizes",
        "box_length_A": box_length,
    }
    if temperature:
        eta = 0.89e-3  # Pa s, water at 298 K
        correction = 2.837297 * 1.380649e-23 * temperature / (6 * np.pi * eta * box_length * 1e-10)  # m²/s
        out["correction_A2_per_ps_for_eta_0.89_mPa_s"] = correction * 1e8
    return out


class AngularMomentum:
    """Total angular momentum L = Σ m (r − R) × (v − V) and torque τ = Σ (r − R) × F about the centre of mass of an
    isolated molecule, per frame (metal units: amu Å²/ps and eV)."""

    def __init__(self, masses: np.ndarray):
        self.masses = masses
        self.t: List[float] = []
        self.L: List[np.ndarray] = []
        self.torque: List[np.ndarray] = []

    def add(self, time: float, positions: np.ndarray, velocities: np.ndarray, forces: Optional[np.ndarray]):
        m = self.masses[:, None]
        r = positions - (m * positions).sum(0) / m.sum()
        v = velocities - (m * velocities).sum(0) / m.sum()
        self.t.append(time)
        self.L.append(np.cross(r, m * v).sum(0))
        self.torque.append(np.cross(r, forces).sum(0) if forces is not None else np.full(3, np.nan))

    def result(self, n_blocks: int) -> Dict[str, dict]:
        t, L, torque = np.array(self.t, float), np.array(self.L), np.array(self.torque)
        norm, torque_norm = np.linalg.norm(L, axis=1), np.linalg.norm(torque, axis=1)
        drift, drift_err = slope_estimate(t, norm, n_blocks)
        out = {
            "t": t,
            "L": L,
            "L_norm": norm,
            "torque": torque,
            "torque_norm": torque_norm,
            "L_norm_drift": {"value": drift, "err": drift_err, "unit": "amu Å²/ps²"},
        }
        if np.all(np.isfinite(torque_norm)):
            from .blocks import mean_estimate

            mean, err, used = mean_estimate(torque_norm, n_blocks)
            out["mean_abs_torque"] = {"value": mean, "err": err, "unit": "eV", "n_blocks": used}
        return {"angular_momentum": out}


def kinetic_temperature(masses: np.ndarray, velocities: np.ndarray) -> float:
    """2 KE / ((3N − 3) k_B): the centre-of-mass motion carries no temperature (LAMMPS's default for `temp`)."""
    dof = 3 * len(masses) - 3
    kinetic = 0.5 * float(np.sum(masses[:, None] * velocities**2)) * AMU_A2_PS2_EV
    return 2.0 * kinetic / (max(dof, 1) * KB_EV)
