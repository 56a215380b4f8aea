"""Thermo summaries of LAMMPS runs for the examples and the demo: statistics with block-average errors, drift of a
conserved quantity, thermo plots (PNG, matplotlib). Structure and dynamics come from petmd.observables."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from ..observables.blocks import mean_estimate, slope_estimate


def drift_per_atom_ps(time_ps: np.ndarray, energy_ev: np.ndarray, n_atoms: int) -> float:
    """Slope of a linear fit of an energy (eV) against time (ps), in meV/atom/ps."""
    return slope_estimate(time_ps, np.asarray(energy_ev, float) * 1e3 / n_atoms, 5)[0]


def equilibrated(run: Mapping[str, np.ndarray], discard: float) -> Dict[str, np.ndarray]:
    """The thermo rows after the first ``discard`` fraction of the run."""
    n = len(run["Step"])
    start = min(int(round(discard * n)), n - 1)
    return {key: values[start:] for key, values in run.items()}


def summary_rows(run: Mapping[str, np.ndarray], columns: Mapping[str, tuple], discard: float = 0.2):
    """[(label, mean, err, unit)] of thermo ``columns`` {column: (label, scale, unit)} over the equilibrated part."""
    part = equilibrated(run, discard)
    rows = []
    for column, (label, scale, unit) in columns.items():
        if column in part:
            mean, err, _ = mean_estimate(part[column] * scale, 5)
            rows.append((label, mean, err, unit))
    return rows


def format_rows(rows) -> str:
    width = max(len(r[0]) for r in rows) if rows else 0
    return "\n".join(f"  {label:<{width}}  {mean:14.6g} ± {err:<10.2g} {unit}" for label, mean, err, unit in rows)


Curve = Tuple[str, Sequence[float], Sequence[float], Sequence[float]]


def plot_angular_momentum(series: Sequence[Curve], png: Path) -> Path:
    """|L| and the net torque of an isolated molecule against time, log scale: (label, time_ps, L, torque) per run
    (examples/gas-phase, examples/study)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, time_ps, momentum, torque in series:
        axes[0].semilogy(time_ps, np.maximum(momentum, 1e-16), label=label, lw=1)  # exactly 0 has no logarithm
        axes[1].semilogy(time_ps, np.maximum(torque, 1e-18), label=label, lw=1)
    axes[0].set_ylabel("|L| (amu Å²/ps)")
    axes[1].set_ylabel("|net torque| (eV)")
    for ax in axes:
        ax.set_xlabel("time (ps)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("one water molecule, NVE from rest", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_thermo(
    run: Mapping[str, np.ndarray], columns: Sequence[str], labels: Sequence[str], png: Path, title: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in columns if c in run]
    fig, axes = plt.subplots(len(columns), 1, figsize=(7, 1.9 * len(columns)), sharex=True, squeeze=False)
    x = run["Time"] if "Time" in run else run["Step"]
    for ax, column in zip(axes[:, 0], columns):
        ax.plot(x, run[column], lw=1)
        ax.set_ylabel(dict(zip(columns, labels)).get(column, column), fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (ps)" if "Time" in run else "step")
    axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
