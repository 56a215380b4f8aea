"""PNG figures of observables (matplotlib, Agg): panels of curves with error bands, and orientation maps. Used for
one run (`petmd observables`) and for overlays of several (`petmd compare`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    curves: Sequence[Tuple[str, np.ndarray, np.ndarray, Optional[np.ndarray]]] = field(default_factory=list)
    reference: Optional[float] = None  # horizontal guide line (g = 1, c = 0)
    ylim_beyond: Optional[float] = None  # scale y to the data beyond this x (skips the intramolecular O–H peak)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, png: Path, title: str) -> Path:
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def curve_figure(panels: Sequence[Panel], png: Path, title: str = "") -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        top = []
        for label, x, y, err in panel.curves:
            x, y = np.asarray(x, float), np.asarray(y, float)
            (line,) = ax.plot(x, y, lw=1.2, label=label)
            if err is not None:
                err = np.asarray(err, float)
                ok = np.isfinite(err) & np.isfinite(y)
                ax.fill_between(x[ok], (y - err)[ok], (y + err)[ok], color=line.get_color(), alpha=0.25, lw=0)
            if panel.ylim_beyond is not None and np.any(x > panel.ylim_beyond):
                top.append(np.nanmax(y[x > panel.ylim_beyond]))
        if panel.reference is not None:
            ax.axhline(panel.reference, color="grey", lw=0.6)
        if top:
            ax.set_ylim(0.0, 1.2 * max(top))
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if len(panel.curves) > 1:
            ax.legend(fontsize=7)
    return _save(plt, fig, png, title)


def orientation_figure(maps: Sequence[Tuple[str, dict]], png: Path, title: str = "") -> Path:
    """One F(cos θ, φ) map per (label, orientation_F entry), on a shared colour scale."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 3.3), squeeze=False)
    values = [np.asarray(entry["F"], float) for _, entry in maps]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(1)
    limit = max(float(np.abs(finite).max()) if finite.size else 0.1, 0.05)
    for ax, (label, entry), value in zip(axes[0], maps, values):
        mesh = ax.pcolormesh(
            entry["phi_edges"], entry["cos_theta_edges"], value, cmap="RdBu_r", vmin=-limit, vmax=limit
        )
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("φ (rad)")
        ax.set_ylabel("cos θ")
        fig.colorbar(mesh, ax=ax, label="F / kT")
    return _save(plt, fig, png, title)
