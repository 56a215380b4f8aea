"""ECSE, the exact and smooth rotational symmetrization of Pozdnyakov & Ceriotti (NeurIPS 2023), per atom environment.

PET is symmetrized layer by layer: in every GNN layer, the per-atom part of the network (edge embedding, compression
and transformer) sees atom i's neighbour vectors expressed in local frames built from pairs of i's neighbours, and
its output tokens are the weighted average over those frames. Frames rotate with the structure and the weights are
invariant, so every token, message and energy is exactly O(3)-invariant, at a cost of (number of frames) × the plain
per-atom work instead of the (structure size) × frames of applying ECSE to the whole model.

Frames of atom i (all functions below are smooth, so energies and forces are):
- every ordered pair (j, k) of neighbours inside an adaptive inner cutoff r_in(i) defines e1 = r̂_j,
  e2 = (r̂_j × r̂_k)/|r̂_j × r̂_k|, e3 = e1 × e2, and its mirror image (e1, −e2, e3), so that inversions are covered;
- weight w_jk = f_in(r_j) f_in(r_k) q(s_jk), s = |r̂_j × r̂_k|², f_in switching 1 → 0 at r_in, q switching 0 → 1 as
  s goes 0.05 → 0.2: nearly collinear pairs (ill-defined e2) fade out;
- r_in is a smooth minimum over the pairs (weighted by how non-collinear they are) of the radius that holds both
  neighbours, and the outer cutoff itself: in water that is ~1.2 Å for O (its two H) and ~1.8 Å for H;
- pruning keeps the frames whose weight is near the largest (smoothly), so a water atom has 2 frames (+ mirrors);
- where even the best frame is weak (collinear or empty environments) an intrinsically invariant fallback is mixed
  in: the same layer with the directions of the neighbour vectors removed (distances and species only), written as
  a frame with rotation 0.
Everything is vectorised over all atoms; discrete choices (which pairs, which frames survive) are made where the
weights are exactly zero, so they never create a discontinuity.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


def smooth_step(t: torch.Tensor) -> torch.Tensor:
    """C∞ step: 0 for t ≤ 0, 1 for t ≥ 1 (ratio of exp(−1/t) bumps); gradients are finite everywhere."""
    ones = torch.ones_like(t)
    # exp(−1/t) is exactly 0 in float64 below t ≈ 1/745; cutting at 1/700 keeps its gradient, exp(−1/t)/t², from
    # becoming 0·inf there
    up = t > 1.0 / 700.0
    down = t < 1.0 - 1.0 / 700.0
    a = torch.where(up, torch.exp(-1.0 / torch.where(up, t, ones)), torch.zeros_like(t))
    b = torch.where(down, torch.exp(-1.0 / torch.where(down, 1.0 - t, ones)), torch.zeros_like(t))
    return a / (a + b)


def switch_off(r: torch.Tensor, cutoff: torch.Tensor, width: float) -> torch.Tensor:
    """1 for r ≤ cutoff − width, 0 for r ≥ cutoff."""
    return 1.0 - smooth_step((r - (cutoff - width)) / width)


def copy_edges(centre: torch.Tensor, copy_atom: torch.Tensor, n_atoms: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """For copies of atoms (``copy_atom`` [C]), the edges each copy sees: (copy [CE], edge [CE]) listing every edge
    of atom copy_atom[c] once per copy c."""
    order = torch.argsort(centre, stable=True)
    counts = torch.bincount(centre, minlength=n_atoms)
    start = torch.cumsum(counts, 0) - counts
    per_copy = counts.index_select(0, copy_atom)
    copy = torch.repeat_interleave(torch.arange(copy_atom.shape[0], device=centre.device), per_copy)
    offsets = torch.cumsum(per_copy, 0) - per_copy
    within = torch.arange(copy.shape[0], device=centre.device) - offsets.index_select(0, copy)
    edge = order.index_select(0, start.index_select(0, copy_atom.index_select(0, copy)) + within)
    return copy, edge


class LocalFrames(nn.Module):
    """ECSE frames of every atom from its neighbour vectors (float64, differentiable). The settings follow the
    published defaults where they exist (smooth max/min sharpness, switch widths, collinearity thresholds, pruning
    and fallback thresholds); they are fixed, not fitted."""

    def __init__(self, outer_cutoff: float):
        super().__init__()
        self.outer_cutoff = float(outer_cutoff)
        self.beta = 5.0  # Å⁻¹: sharpness of the smooth max/min of distances
        self.lambert = 0.27846454276107380  # W(1/e): a two-value smooth max at beta is at most W(1/e)/beta low
        self.width = 0.15  # Å: width of the inner and outer cutoff switches
        self.s_select, self.s_select_width = 0.2, 0.15  # pairs setting r_in: none for s ≤ 0.2, full for s ≥ 0.35
        self.s_frame, self.s_frame_width = 0.05, 0.15  # frame weights: 0 for s ≤ 0.05, full for s ≥ 0.2
        self.beta_weights = 5.0  # sharpness of the smooth max of frame weights
        self.prune, self.prune_width = 0.9, 0.1  # frames below 0.9 of the largest weight dropped (over 0.9–1.0)
        self.prune_on, self.prune_on_width = 0.1, 0.1  # pruning switches on as the largest weight goes 0.1 → 0.2
        self.fallback = 0.5  # fallback weight 1 → 0 as the largest frame weight goes 0 → 0.5

    def forward(
        self, vectors: torch.Tensor, centre: torch.Tensor, n_atoms: int
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """vectors [E, 3]: x_e of every edge e, centre [E]: its atom.

        Returns (atom [C], rotations [C, 3, 3], weights [C]):
        copy c of atom ``atom[c]`` sees x_e @ rotations[c] (coordinates along e1, e2, e3; the fallback's rotation is 0);
        weights sum to 1 over each atom's copies."""
        device = vectors.device
        r = torch.linalg.norm(vectors, dim=1)
        inside = torch.nonzero(r < self.outer_cutoff).squeeze(1)
        # ordered pairs of neighbours of one atom: every edge as a "copy" of its atom, paired with the atom's edges
        inside_centre = centre.index_select(0, inside)
        a, b = copy_edges(inside_centre, inside_centre, n_atoms)
        distinct = a != b
        a, b = inside.index_select(0, a[distinct]), inside.index_select(0, b[distinct])
        pair_atom = centre.index_select(0, a)
        ra, rb = r.index_select(0, a), r.index_select(0, b)
        ua = vectors.index_select(0, a) / ra.unsqueeze(1)
        ub = vectors.index_select(0, b) / rb.unsqueeze(1)
        normal = torch.linalg.cross(ua, ub, dim=1)
        s = (normal * normal).sum(1)

        # adaptive inner cutoff: smooth minimum of {outer cutoff} ∪ {radius holding both neighbours of a good pair}
        top = torch.maximum(ra, rb)
        ea, eb = torch.exp(self.beta * (ra - top)), torch.exp(self.beta * (rb - top))
        holds = (ra * ea + rb * eb) / (ea + eb) + self.lambert / self.beta
        outer = torch.full_like(ra, self.outer_cutoff)
        goodness = (
            switch_off(ra, outer, self.width)
            * switch_off(rb, outer, self.width)
            * smooth_step((s - self.s_select) / self.s_select_width)
        )
        base = torch.exp(torch.full((n_atoms,), -self.beta * self.outer_cutoff, dtype=r.dtype, device=device))
        boltzmann = goodness * torch.exp(-self.beta * holds)
        numerator = (self.outer_cutoff * base).index_add(0, pair_atom, holds * boltzmann)
        denominator = base.index_add(0, pair_atom, boltzmann)
        r_in = numerator / denominator + self.width

        # frame weights; pairs outside r_in or too collinear have weight exactly 0 and are dropped
        limit = r_in.index_select(0, pair_atom)
        candidate = torch.nonzero((ra < limit) & (rb < limit) & (s > self.s_frame)).squeeze(1)
        pair_atom, limit = pair_atom[candidate], limit[candidate]
        ra, rb, ua, normal, s = ra[candidate], rb[candidate], ua[candidate], normal[candidate], s[candidate]
        w = (
            switch_off(ra, limit, self.width)
            * switch_off(rb, limit, self.width)
            * smooth_step((s - self.s_frame) / self.s_frame_width)
        )
        positive = torch.nonzero(w > 0).squeeze(1)  # a switch can underflow to exactly 0 just inside r_in
        w, pair_atom, ua, normal = w[positive], pair_atom[positive], ua[positive], normal[positive]

        # smooth maximum of each atom's weights; it sets pruning and the fallback
        zeros = torch.zeros(n_atoms, dtype=r.dtype, device=device)
        boltzmann = w * torch.exp(self.beta_weights * w)
        total = zeros.index_add(0, pair_atom, boltzmann)
        largest = zeros.index_add(0, pair_atom, w * boltzmann) / torch.where(total > 0, total, torch.ones_like(total))
        threshold = largest.index_select(0, pair_atom)
        on = smooth_step((threshold - self.prune_on) / self.prune_on_width)
        # where on = 0 the pruning factor is unused: keep its gradient finite there
        threshold = torch.where(threshold > self.prune_on, threshold, torch.ones_like(threshold))
        keep = smooth_step((w - self.prune * threshold) / (self.prune_width * threshold))
        w = w * (on * keep + (1.0 - on))
        survivors = torch.nonzero(w > 0).squeeze(1)
        w, pair_atom, ua, normal = w[survivors], pair_atom[survivors], ua[survivors], normal[survivors]

        e2 = normal / torch.linalg.norm(normal, dim=1, keepdim=True)
        e3 = torch.linalg.cross(ua, e2, dim=1)
        frames = torch.stack([ua, e2, e3], dim=2)  # columns e1, e2, e3
        mirrors = torch.stack([ua, -e2, e3], dim=2)
        fallback = 1.0 - smooth_step(largest / self.fallback)
        fallback_atoms = torch.nonzero(fallback > 0).squeeze(1)

        atom = torch.cat([pair_atom, pair_atom, fallback_atoms])
        rotations = torch.cat(
            [frames, mirrors, torch.zeros(fallback_atoms.shape[0], 3, 3, dtype=r.dtype, device=device)]
        )
        weights = torch.cat([w, w, fallback.index_select(0, fallback_atoms)])
        norm = zeros.index_add(0, atom, weights)
        return atom, rotations, weights / norm.index_select(0, atom)
