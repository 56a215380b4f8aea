"""Figures and summaries of LAMMPS runs for the examples and the demo: thermo statistics with block-average errors,
drift of a conserved quantity, thermo and g(r) plots (PNG, matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Sequence

import numpy as np

from .rdf import RDF


def block_mean(values: np.ndarray, n_blocks: int = 5):
    """(mean, standard error from ``n_blocks`` contiguous block means; NaN with fewer than 2 blocks)."""
    values = np.asarray(values, dtype=float)
    n_blocks = max(1, min(n_blocks, len(values)))
    blocks = np.array([chunk.mean() for chunk in np.array_split(values, n_blocks)])
    err = blocks.std(ddof=1) / np.sqrt(n_blocks) if n_blocks > 1 else float("nan")
    return float(values.mean()), float(err)


def drift_per_atom_ps(time_ps: np.ndarray, energy_ev: np.ndarray, n_atoms: int) -> float:
    """Slope of a linear fit of an energy (eV) against time (ps), in meV/atom/ps."""
    if len(time_ps) < 2:
        return float("nan")
    return float(np.polyfit(time_ps, energy_ev, 1)[0] * 1e3 / n_atoms)


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
            mean, err = block_mean(part[column] * scale)
            rows.append((label, mean, err, unit))
    return rows


def format_rows(rows) -> str:
    width = max(len(r[0]) for r in rows) if rows else 0
    return "\n".join(f"  {label:<{width}}  {mean:14.6g} ± {err:<10.2g} {unit}" for label, mean, err, unit in rows)


def plot_thermo(run: Mapping[str, np.ndarray], columns: Sequence[str], labels: Sequence[str], png: Path,
                title: str) -> Path:
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


def plot_rdfs(rdfs: Sequence[RDF], png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for rdf in rdfs:
        label = f"g_{rdf.pair[:1]}{rdf.pair[1:]}"
        ax.plot(rdf.r, rdf.g, lw=1.2, label=label)
        if np.all(np.isfinite(rdf.err)):
            ax.fill_between(rdf.r, rdf.g - rdf.err, rdf.g + rdf.err, alpha=0.3)
    ax.axhline(1.0, color="grey", lw=0.6)
    # scale to the intermolecular structure: the intramolecular O–H peak (g ~ 25) would flatten everything else
    beyond = [rdf.g[rdf.r > 1.5].max() for rdf in rdfs if np.any(rdf.r > 1.5)]
    if beyond:
        ax.set_ylim(0.0, 1.25 * max(beyond))
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def write_rdf_csv(rdfs: Sequence[RDF], path: Path) -> Path:
    header = ["r_A"] + [f"{kind}_{rdf.pair}" for rdf in rdfs for kind in ("g", "err", "n")]
    columns = [rdfs[0].r] + [c for rdf in rdfs for c in (rdf.g, rdf.err, rdf.coordination)]
    np.savetxt(path, np.column_stack(columns), delimiter=",", header=",".join(header), comments="", fmt="%.6g")
    return path
