"""PET's layers: the per-atom transformer, one message-passing layer (GNNLayer) and the padded per-atom layout they
work in.

Edge tokens [E, d] live in edge space (no padding) for the per-edge MLPs; only the per-atom transformer works on a
padded [N, 1 + M, d] layout (central token + up to M neighbour tokens). ``GNNLayer.on_atoms`` is the per-layer
primitive every way of running the model drives: the plain forward (model/pet.py), chunked evaluation with
recomputation (model/chunked.py), message exchange between MPI ranks (model/exchange.py) and, with tangents, the
training gradient (model/tangents.py).
"""

from __future__ import annotations

import math
from typing import List, Tuple, cast

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_hidden: int = 1):
        super().__init__()
        layers: List[nn.Module] = []
        d = d_in
        for _ in range(n_hidden):
            layers += [nn.Linear(d, d_hidden), nn.SiLU()]
            d = d_hidden
        layers.append(nn.Linear(d, d_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the final Linear: forward(x) = net[-1](hidden(x))."""
        last = len(self.net) - 1
        for k, layer in enumerate(self.net):
            if k < last:
                x = layer(x)
        return x


class Attention(nn.Module):
    """Multi-head self-attention with an additive per-key mask (log f_c; −inf for padding).

    Written with explicit matmul/softmax rather than scaled_dot_product_attention: training needs the gradient of
    the forces (double backward), which the fused CPU kernel does not provide.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        # unbind, not three selects: its backward stacks the three gradients in one pass, where each select's
        # backward would fill a zero tensor of the full [3, ...] size and add it to the others
        q, k, v = self.qkv(x).view(n, t, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4).unbind(0)
        logits = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d_head))
        weights = torch.softmax(logits + key_mask[:, None, None, :], dim=-1)
        y = torch.matmul(weights, v).transpose(1, 2).reshape(n, t, d)
        return self.out(y)


class TransformerLayer(nn.Module):
    """Post-LN transformer layer: x = LN(x + Att(x)); x = LN(x + MLP(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.attention = Attention(d_model, n_heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, d_ff, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x, key_mask))
        return self.norm2(x + self.mlp(x))


class GNNLayer(nn.Module):
    """One PET message-passing layer: edge tokens → per-atom transformer → central/bond energy heads."""

    def __init__(
        self,
        n_species: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        n_layers: int,
        head_hidden: int,
        with_neighbor_species: bool,
        cutoff: float,
    ):
        super().__init__()
        self.with_neighbor_species = with_neighbor_species
        self.geometry = nn.Linear(4, d_model)
        init_geometry_embedding(self.geometry, cutoff)
        n_in = 3 if with_neighbor_species else 2
        self.compress = MLP(n_in * d_model, d_model, d_model)
        self.central_embedding = nn.Embedding(n_species, d_model)
        self.transformer = nn.ModuleList([TransformerLayer(d_model, n_heads, d_ff) for _ in range(n_layers)])
        self.central_head = MLP(d_model, head_hidden, 1, n_hidden=2)
        self.bond_head = MLP(d_model, head_hidden, 1, n_hidden=2)
        # an untrained model predicts exactly the composition baseline and zero forces
        for head in (self.central_head, self.bond_head):
            output = cast(nn.Linear, head.net[-1])
            nn.init.zeros_(output.weight)
            nn.init.zeros_(output.bias)

    def forward(
        self,
        geometry_input: torch.Tensor,  # [E, 4]: x_ij, |x_ij| (in ECSE: per copy and edge, x_ij in the copy's frame)
        messages: torch.Tensor,  # [E, d]
        neighbor_embedding: torch.Tensor,  # [E, d]
        species: torch.Tensor,  # [N]
        key_mask: torch.Tensor,  # [N, 1 + M]
        pad_index: torch.Tensor,  # [E] → row of the padded [N * M] edge layout
        max_neighbors: int,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Output tokens: central [N, d] and edge [E, d]."""
        parts = [self.geometry(geometry_input), messages]
        if self.with_neighbor_species:
            parts.append(neighbor_embedding)
        edge_tokens = self.compress(torch.cat(parts, dim=1))
        tokens = per_atom_layout(
            self.central_embedding(species).unsqueeze(1), edge_tokens, pad_index, max_neighbors, 0.0
        )
        for layer in self.transformer:
            tokens = layer(tokens, key_mask)
        return tokens[:, 0], edge_rows(tokens, pad_index)

    def readout(self, central_out: torch.Tensor, edge_out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Central energies [N] and bond energies [E] of this layer."""
        return self.central_head(central_out).squeeze(-1), self.bond_head(edge_out).squeeze(-1)

    def readout_with_features(
        self, central_out: torch.Tensor, edge_out: torch.Tensor, fc: torch.Tensor, edge_i: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """readout's central [N] and bond [E] energies, and the per-atom last-layer features [N, 2 (h + 1)] (float64)
        in which the layer's energies are linear: (hidden of the central head, 1, Σ_j f_c(r_ij) · (hidden of the
        bond head of ij, 1)), so that the layer's energy of atom i is features_i · last_layer_weights()
        (petmd.uncertainty uses them). The heads' hidden layers run once for both."""
        central_hidden = self.central_head.hidden(central_out)
        bond_hidden = self.bond_head.hidden(edge_out)
        central = self.central_head.net[-1](central_hidden).squeeze(-1)
        bond = self.bond_head.net[-1](bond_hidden).squeeze(-1)
        n_atoms = central_out.shape[0]
        # detached: no gradient flows through the features, so autograd need not record their arithmetic; summed in
        # the network's dtype: one [N, h + 1] result, not an [E, h + 1] float64 copy of every edge's
        bond_hidden, fc = bond_hidden.detach(), fc.detach()
        weighted = torch.cat([bond_hidden, torch.ones_like(bond_hidden[:, :1])], dim=1) * fc.unsqueeze(1)
        bond_sum = torch.zeros(n_atoms, weighted.shape[1], dtype=weighted.dtype, device=weighted.device)
        bond_sum = bond_sum.index_add(0, edge_i, weighted)
        ones = torch.ones_like(central_hidden[:, :1])
        features = torch.cat([central_hidden.detach(), ones, bond_sum], dim=1).to(torch.float64)
        return central, bond, features

    def last_layer_weights(self) -> torch.Tensor:
        """The weights [2 (h + 1)] (float64) that readout_with_features are multiplied with."""
        parts: List[torch.Tensor] = []
        for head in (self.central_head, self.bond_head):
            final = cast(nn.Linear, head.net[-1])
            parts += [final.weight.reshape(-1), final.bias.reshape(-1)]
        return torch.cat(parts).to(torch.float64)

    def on_atoms(
        self,
        vectors: torch.Tensor,
        r: torch.Tensor,
        fc: torch.Tensor,
        log_fc: torch.Tensor,
        messages: torch.Tensor,
        neighbor_embedding: torch.Tensor,
        species: torch.Tensor,
        local_i: torch.Tensor,
        with_features: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This layer on a set of atoms and all of their edges (``local_i``: each edge's central atom as an index
        into ``species``): the layer's energies of those atoms, their output edge tokens and, ``with_features``,
        their last-layer features (``readout_with_features``; else an empty tensor). Atoms are independent within a
        layer, which is what makes chunked evaluation exact."""
        n_atoms = species.shape[0]
        pad_index, max_neighbors = padded_layout(local_i, n_atoms)
        key_mask = attention_mask(log_fc, pad_index, n_atoms, max_neighbors)
        central_out, edge_out = self(
            torch.cat([vectors, r.unsqueeze(1)], dim=1),
            messages,
            neighbor_embedding,
            species,
            key_mask,
            pad_index,
            max_neighbors,
        )
        if with_features:
            central, bond, features = self.readout_with_features(central_out, edge_out, fc, local_i)
        else:
            central, bond = self.readout(central_out, edge_out)
            features = torch.zeros(0, 0, dtype=torch.float64, device=fc.device)
        return central.index_add(0, local_i, bond * fc), edge_out, features


def init_geometry_embedding(linear: nn.Linear, cutoff: float) -> None:
    """Start the edge embedding Linear(4→d)(x, |x|) nearly rotation invariant and sharp in |x|.

    Small weights on the Cartesian components; on |x|, weights of magnitude 2–8 Å⁻¹ with biases that put each
    channel's SiLU kink at a radius drawn uniformly in (0.5 Å, R_c), like a random radial basis. Only the starting
    point changes, not the architecture. Why: under random rotations the force signal reaching the network is the
    correlation of the reference forces with the gradient of radial features, of order f''(r)·σ_r² with bond-length
    fluctuations σ_r ≈ 0.03 Å; with PyTorch's default init it is so small that forces stayed at zero for hundreds of
    steps on water (force loss 1.12 → 1.12 in 400 steps on 20 frames, against 1.12 → 0.095 with this init).
    """
    with torch.no_grad():
        d = linear.weight.shape[0]
        linear.weight[:, :3].mul_(0.1)
        sign = torch.where(torch.rand(d) < 0.5, -1.0, 1.0)
        weight = torch.empty(d).uniform_(2.0, 8.0) * sign
        knots = torch.empty(d).uniform_(0.5, cutoff)
        linear.weight[:, 3] = weight
        linear.bias.copy_(-weight * knots)


def per_atom_layout(
    first: torch.Tensor, edge_values: torch.Tensor, pad_index: torch.Tensor, max_neighbors: int, fill: float
) -> torch.Tensor:
    """The padded per-atom layout [N, 1 + M, ...]: ``first`` [N, 1, ...] in column 0 (the central token), each
    edge's values in its slot (``pad_index``), ``fill`` in the padding."""
    n_atoms = first.shape[0]
    trailing: List[int] = list(edge_values.shape[1:])
    slots = torch.full([n_atoms * max_neighbors] + trailing, fill, dtype=edge_values.dtype, device=edge_values.device)
    slots = slots.index_copy(0, pad_index, edge_values).view([n_atoms, max_neighbors] + trailing)
    return torch.cat([first, slots], dim=1)


def edge_rows(per_atom: torch.Tensor, pad_index: torch.Tensor) -> torch.Tensor:
    """Back from the padded per-atom layout [N, 1 + M, d] to one row per edge [E, d]."""
    n_atoms, tokens, d = per_atom.shape
    return per_atom[:, 1:].reshape(n_atoms * (tokens - 1), d).index_select(0, pad_index)


def attention_mask(log_fc: torch.Tensor, pad_index: torch.Tensor, n_atoms: int, max_neighbors: int) -> torch.Tensor:
    """Additive key mask [n_atoms, 1 + M] of the per-atom transformer: 0 for the central token, log f_c for the
    neighbour tokens, −inf for padding."""
    central = torch.zeros(n_atoms, 1, dtype=log_fc.dtype, device=log_fc.device)
    return per_atom_layout(central, log_fc, pad_index, max_neighbors, float("-inf"))


def padded_layout(edge_i: torch.Tensor, n_atoms: int) -> Tuple[torch.Tensor, int]:
    """Slot of every edge in a padded [n_atoms, M] per-atom layout; M = the largest neighbour count."""
    n_edges = edge_i.shape[0]
    if n_edges == 0:
        return torch.zeros(0, dtype=torch.long, device=edge_i.device), 0
    counts = torch.bincount(edge_i, minlength=n_atoms)
    max_neighbors = int(counts.max())
    order = torch.argsort(edge_i, stable=True)
    offsets = torch.cumsum(counts, 0) - counts
    sorted_i = edge_i.index_select(0, order)
    slot_sorted = torch.arange(n_edges, device=edge_i.device) - offsets.index_select(0, sorted_i)
    slot = torch.empty_like(slot_sorted).index_copy_(0, order, slot_sorted)
    return edge_i * max_neighbors + slot, max_neighbors
