"""Static observables accumulated frame by frame: partial radial distribution functions, dipole-orientation
correlations c_L(r), c_T(r), and the lab-frame orientation free energy F(cos θ, φ) of the molecular dipole with
its moments."""

from __future__ import annotations

from typing import Dict

import numpy as np

from .blocks import BlockSeries, ratio_estimate
from .frames import TrajectoryFrame
from .water import Molecules

PAIRS = (("O", "O"), ("O", "H"), ("H", "H"))


class Pairs:
    """All atom pairs of a periodic frame within ``r_max`` (each unordered pair once, every periodic image):
    one neighbour list shared by the observables that need one."""

    def __init__(self, frame: TrajectoryFrame, r_max: float):
        from vesin import NeighborList

        i, j, d, vectors = NeighborList(cutoff=r_max, full_list=False).compute(
            points=frame.positions, box=frame.cell, periodic=True, quantities="ijdD"
        )
        self.i, self.j, self.d, self.vectors = i.astype(np.int64), j.astype(np.int64), d, vectors


class RDFAccumulator:
    """g_AB(r) for the pairs in PAIRS, each frame normalised by its own volume (changing NPT boxes)."""

    def __init__(self, r_max: float, n_bins: int):
        self.edges = np.linspace(0.0, r_max, n_bins + 1)
        self.shell = 4.0 / 3.0 * np.pi * (self.edges[1:] ** 3 - self.edges[:-1] ** 3)
        self.g = BlockSeries((len(PAIRS), n_bins))
        self.density = BlockSeries((len(PAIRS),))  # number density of B seen from an A, for coordination numbers
        self.pairs = [(a, b) for a, b in PAIRS]
        # the closest approach of each pair of elements over all frames: a run that left the model's data (two H
        # far closer than in any water) shows here whatever the averages say
        self.closest = np.full(len(PAIRS), np.inf)

    def add(self, k: int, frame: TrajectoryFrame, pairs: Pairs):
        self.g.new_frame(k)
        self.density.new_frame(k)
        kinds = np.zeros(len(frame.symbols), np.int8)  # 1 O, 2 H, 0 other
        kinds[frame.symbols == "O"], kinds[frame.symbols == "H"] = 1, 2
        ki, kj = kinds[pairs.i], kinds[pairs.j]
        volume = frame.volume
        counts = {"O": int((kinds == 1).sum()), "H": int((kinds == 2).sum())}
        for p, (a, b) in enumerate(self.pairs):
            n_a, n_b = counts[a], counts[b]
            if n_a == 0 or n_b == 0 or (a == b and n_a < 2):
                continue
            ka, kb = (1 if a == "O" else 2), (1 if b == "O" else 2)
            select = ((ki == ka) & (kj == kb)) | ((ki == kb) & (kj == ka)) if a != b else (ki == ka) & (kj == ka)
            if select.any():
                self.closest[p] = min(self.closest[p], float(pairs.d[select].min()))
            histogram, _ = np.histogram(pairs.d[select], bins=self.edges)
            distinct = n_a * (n_a - 1) / 2 if a == b else n_a * n_b
            self.g.add(k, histogram / (distinct / volume * self.shell), where=p)
            self.density.add(k, (n_b - 1 if a == b else n_b) / volume, where=p)

    def result(self, n_blocks: int) -> Dict[str, dict]:
        g_blocks = self.g.blocks(n_blocks)
        frames = self.g.block_frames(n_blocks)
        rho_blocks = self.density.blocks(n_blocks)
        r = 0.5 * (self.edges[1:] + self.edges[:-1])
        out = {}
        for p, (a, b) in enumerate(self.pairs):
            g, err = ratio_estimate(g_blocks[:, p], frames[:, None])
            # running coordination number per block, from that block's mean g and density
            coordination_blocks = np.cumsum(
                g_blocks[:, p] * (rho_blocks[:, p] / frames)[:, None] * self.shell / frames[:, None], axis=1
            )
            coordination = np.cumsum(g * rho_blocks[:, p].sum() / frames.sum() * self.shell)
            c_err = (
                coordination_blocks.std(axis=0, ddof=1) / np.sqrt(len(frames))
                if len(frames) > 1
                else np.full_like(g, np.nan)
            )
            out[f"g_{a}{b}"] = {
                "r": r,
                "g": g,
                "err": err,
                "coordination": coordination,
                "coordination_err": c_err,
                "n_blocks": len(frames),
                "closest": float(self.closest[p]) if np.isfinite(self.closest[p]) else None,
            }
        return out


class DipoleCorrelation:
    """c_L(r) = 3⟨(r̂·u_i)(r̂·u_j)⟩ and c_T(r) = (3/2)⟨u_i·u_j − (r̂·u_i)(r̂·u_j)⟩ over O–O pairs at distance r.
    The factors 3 and 3/2 are the isotropic normalisation: a fully polarised liquid (all u equal) gives 1 for
    both, uncorrelated dipoles give 0."""

    def __init__(self, r_max: float, n_bins: int):
        self.edges = np.linspace(0.0, r_max, n_bins + 1)
        self.sums = BlockSeries((3, n_bins))  # Σ (r̂·u_i)(r̂·u_j), Σ u_i·u_j, pair count

    def add(self, k: int, frame: TrajectoryFrame, pairs: Pairs, molecules: Molecules):
        self.sums.new_frame(k)
        index_of_o = np.full(len(frame.symbols), -1)
        index_of_o[molecules.oxygens] = np.arange(len(molecules.oxygens))
        oi, oj = index_of_o[pairs.i], index_of_o[pairs.j]
        keep = (oi >= 0) & (oj >= 0)
        oi, oj = oi[keep], oj[keep]
        whole = molecules.whole[oi] & molecules.whole[oj]
        oi, oj = oi[whole], oj[whole]
        d, vectors = pairs.d[keep][whole], pairs.vectors[keep][whole]
        rhat = vectors / d[:, None]
        ui, uj = molecules.u[oi], molecules.u[oj]
        longitudinal = np.einsum("pk,pk->p", rhat, ui) * np.einsum("pk,pk->p", rhat, uj)
        dot = np.einsum("pk,pk->p", ui, uj)
        which = np.digitize(d, self.edges) - 1
        inside = (which >= 0) & (which < len(self.edges) - 1)
        n = len(self.edges) - 1
        self.sums.add(k, np.bincount(which[inside], longitudinal[inside], n), where=0)
        self.sums.add(k, np.bincount(which[inside], dot[inside], n), where=1)
        self.sums.add(k, np.bincount(which[inside], minlength=n).astype(float), where=2)

    def result(self, n_blocks: int) -> Dict[str, dict]:
        blocks = self.sums.blocks(n_blocks)
        r = 0.5 * (self.edges[1:] + self.edges[:-1])
        c_l, c_l_err = ratio_estimate(3.0 * blocks[:, 0], blocks[:, 2])
        c_t, c_t_err = ratio_estimate(1.5 * (blocks[:, 1] - blocks[:, 0]), blocks[:, 2])
        pairs = blocks[:, 2].sum(axis=0)
        return {
            "c_L": {"r": r, "c": c_l, "err": c_l_err, "pairs": pairs, "n_blocks": len(blocks)},
            "c_T": {"r": r, "c": c_t, "err": c_t_err, "pairs": pairs, "n_blocks": len(blocks)},
        }


# the l = 1 and l = 2 moments of the dipole direction u: the mean of u, and of the traceless Q = (3 u u − 1) / 2
# by its five independent components (Q_zz = −Q_xx − Q_yy)
MOMENTS = ("u_x", "u_y", "u_z", "Q_xx", "Q_yy", "Q_xy", "Q_xz", "Q_yz")


def _moments(u: np.ndarray) -> np.ndarray:
    """Per molecule: the components named in MOMENTS, shape (len(u), 8)."""
    x, y, z = u[:, 0], u[:, 1], u[:, 2]
    return np.stack([x, y, z, 1.5 * x * x - 0.5, 1.5 * y * y - 0.5, 1.5 * x * y, 1.5 * x * z, 1.5 * y * z], axis=1)


class OrientationFreeEnergy:
    """F(cos θ, φ) = −ln(P / P_isotropic) of the molecular dipole u in the lab frame (θ from z, φ from x in the xy
    plane), in units of kT. Bins are uniform in cos θ and φ, so each covers the same solid angle. Beside it the
    distribution's l = 1 and 2 moments (MOMENTS), zero for an isotropic liquid on average: eight numbers that sum
    up F's bins. In a small box both follow the net dipole of all molecules, which relaxes slowly (water's
    dielectric relaxation, picoseconds): a run of a few such times is not isotropic on average, whatever the model, and
    block errors from blocks shorter than that are lower bounds."""

    def __init__(self, n_cos: int, n_phi: int):
        self.cos_edges = np.linspace(-1.0, 1.0, n_cos + 1)
        self.phi_edges = np.linspace(-np.pi, np.pi, n_phi + 1)
        self.counts = BlockSeries((n_cos, n_phi))
        self.moments = BlockSeries((len(MOMENTS),))
        self.totals = BlockSeries(())

    def add(self, k: int, molecules: Molecules):
        self.counts.new_frame(k)
        self.moments.new_frame(k)
        self.totals.new_frame(k)
        u = molecules.u[molecules.whole]
        if len(u) == 0:
            return
        histogram, _, _ = np.histogram2d(
            np.clip(u[:, 2], -1.0, 1.0), np.arctan2(u[:, 1], u[:, 0]), bins=(self.cos_edges, self.phi_edges)
        )
        self.counts.add(k, histogram)
        self.moments.add(k, _moments(u).sum(axis=0))
        self.totals.add(k, float(len(u)))

    def result(self, n_blocks: int) -> Dict[str, dict]:
        counts = self.counts.blocks(n_blocks)
        totals = self.totals.blocks(n_blocks)
        n_bins = counts.shape[1] * counts.shape[2]
        p, p_err = ratio_estimate(counts * n_bins, np.broadcast_to(totals[:, None, None], counts.shape))
        with np.errstate(divide="ignore", invalid="ignore"):
            free_energy = -np.log(p)
            err = p_err / p
        sums = self.moments.blocks(n_blocks)
        moments, moments_err = ratio_estimate(sums, np.broadcast_to(totals[:, None], sums.shape))
        return {
            "orientation_moments": {
                "component": list(MOMENTS),
                "value": moments,
                "err": moments_err,
                "n_blocks": len(sums),
            },
            "orientation_F": {
                "cos_theta_edges": self.cos_edges,
                "phi_edges": self.phi_edges,
                "F": np.where(p > 0, free_energy, np.nan),
                "err": np.where(p > 0, err, np.nan),
                "samples": float(totals.sum()),
                "n_blocks": len(counts),
            },
        }


def first_shell(entry: dict, after: float, window: float = 1.2):
    """(r of the highest peak beyond ``after`` Å, r of the minimum within ``window`` Å after it, coordination number
    there) of a g(r) entry: the first coordination shell of a liquid, where the first peak is the highest (g_OO
    beyond 2 Å)."""
    r, g, coordination = (np.asarray(entry[k], float) for k in ("r", "g", "coordination"))
    peak = int(np.argmax(np.where(r > after, g, -np.inf)))
    search = (r >= r[peak]) & (r <= r[peak] + window)
    minimum = int(np.flatnonzero(search)[np.argmin(g[search])])
    return float(r[peak]), float(r[minimum]), float(coordination[minimum])
