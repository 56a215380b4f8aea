"""The Point Edge Transformer (Pozdnyakov & Ceriotti 2023), as described in docs/pet-reference.

Data flow for N atoms and E directed edges (i→j, vector x_ij):
  edge tokens [E, d] live in edge space (no padding) for the per-edge MLPs; only the per-atom transformer works on a
  padded [N, 1 + M, d] layout (central token + up to M neighbour tokens). After each GNN layer the message of edge
  ij becomes ½(m_ij + output token of the reverse edge ji), which needs the reverse-edge index.

Energies: y_i = scale · Σ_layers [H_c(central_i) + Σ_j f_c(r_ij) H_b(edge_ij)] + e_{species_i}.
Forces and virial come from one gradient of the energy w.r.t. the edge vectors (see ``forward``).
The module is TorchScript-compatible; ``petmd export`` scripts it unchanged.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .cutoff import cutoff_function
from .ecse import LocalFrames, copy_edges


# Chunk sizes of inference with forces when none is set (chunk_atoms = -1). CPU: measured on 2 cores with the
# study-size model (docs/benchmarks.md): 64-128 atoms run fastest (small working sets stay in cache), 1536 atoms in
# chunks of 128 ran 1.8x faster than in one piece and in 1.5 instead of 10 GB. GPU: large chunks keep it busy; not
# yet measured.
DEFAULT_CHUNK_ATOMS_CPU = 128
DEFAULT_CHUNK_ATOMS_GPU = 4096


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

    def __init__(self, n_species: int, cfg_d: int, n_heads: int, d_ff: int, n_layers: int, head_hidden: int,
                 with_neighbor_species: bool, cutoff: float):
        super().__init__()
        self.with_neighbor_species = with_neighbor_species
        self.geometry = nn.Linear(4, cfg_d)
        init_geometry_embedding(self.geometry, cutoff)
        n_in = 3 if with_neighbor_species else 2
        self.compress = MLP(n_in * cfg_d, cfg_d, cfg_d)
        self.central_embedding = nn.Embedding(n_species, cfg_d)
        self.transformer = nn.ModuleList([TransformerLayer(cfg_d, n_heads, d_ff) for _ in range(n_layers)])
        self.central_head = MLP(cfg_d, head_hidden, 1, n_hidden=2)
        self.bond_head = MLP(cfg_d, head_hidden, 1, n_hidden=2)
        # an untrained model predicts exactly the composition baseline and zero forces
        for head in (self.central_head, self.bond_head):
            nn.init.zeros_(head.net[-1].weight)
            nn.init.zeros_(head.net[-1].bias)

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
        tokens = per_atom_layout(self.central_embedding(species).unsqueeze(1), edge_tokens, pad_index, max_neighbors,
                                 0.0)
        for layer in self.transformer:
            tokens = layer(tokens, key_mask)
        return tokens[:, 0], edge_rows(tokens, pad_index)

    def readout(self, central_out: torch.Tensor, edge_out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Central energies [N] and bond energies [E] of this layer."""
        return self.central_head(central_out).squeeze(-1), self.bond_head(edge_out).squeeze(-1)

    def on_atoms(self, vectors: torch.Tensor, r: torch.Tensor, fc: torch.Tensor, log_fc: torch.Tensor,
                 messages: torch.Tensor, neighbor_embedding: torch.Tensor, species: torch.Tensor,
                 local_i: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """This layer on a set of atoms and all of their edges (``local_i``: each edge's central atom as an index
        into ``species``): the layer's energies of those atoms and their output edge tokens. Atoms are independent
        within a layer, which is what makes chunked evaluation exact."""
        n_atoms = species.shape[0]
        pad_index, max_neighbors = padded_layout(local_i, n_atoms)
        key_mask = attention_mask(log_fc, pad_index, n_atoms, max_neighbors)
        central_out, edge_out = self(torch.cat([vectors, r.unsqueeze(1)], dim=1), messages, neighbor_embedding,
                                     species, key_mask, pad_index, max_neighbors)
        central, bond = self.readout(central_out, edge_out)
        return central.index_add(0, local_i, bond * fc), edge_out


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


def per_atom_layout(first: torch.Tensor, edge_values: torch.Tensor, pad_index: torch.Tensor, max_neighbors: int,
                    fill: float) -> torch.Tensor:
    """The padded per-atom layout [N, 1 + M, ...]: ``first`` [N, 1, ...] in column 0 (the central token), each
    edge's values in its slot (``pad_index``), ``fill`` in the padding."""
    n_atoms = first.shape[0]
    trailing: List[int] = list(edge_values.shape[1:])
    slots = torch.full([n_atoms * max_neighbors] + trailing, fill, dtype=edge_values.dtype,
                       device=edge_values.device)
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


def atom_chunks(edge_i: torch.Tensor, active: torch.Tensor,
                chunk_atoms: int) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
    """The ``active`` atoms ([N] bool) split into chunks of ``chunk_atoms`` in order of neighbour count (so each
    chunk pads its neighbour tokens to nearly its own count, not the system's largest): per chunk its atoms, its
    edges (those whose central atom it holds) and each edge's central atom as an index into the chunk's atoms."""
    n_atoms = active.shape[0]
    device = edge_i.device
    counts = torch.bincount(edge_i, minlength=n_atoms)
    atom_order = torch.argsort(counts, stable=True)
    atom_order = atom_order[active.index_select(0, atom_order)]
    n_active = atom_order.shape[0]
    # inactive atoms rank last, so their edges sort after every chunk's
    rank = torch.full((n_atoms,), n_atoms, dtype=torch.long, device=device)
    rank.index_copy_(0, atom_order, torch.arange(n_active, device=device))
    edge_rank = rank.index_select(0, edge_i)
    edge_order = torch.argsort(edge_rank, stable=True)
    firsts: List[int] = list(range(0, n_active, chunk_atoms))
    bounds = torch.tensor(firsts + [n_active], dtype=edge_rank.dtype, device=device)
    edge_starts: List[int] = torch.searchsorted(edge_rank.index_select(0, edge_order), bounds).tolist()
    atoms: List[torch.Tensor] = []
    edges: List[torch.Tensor] = []
    local_i: List[torch.Tensor] = []
    for c, first in enumerate(firsts):
        chunk_edges = edge_order[edge_starts[c]:edge_starts[c + 1]]
        atoms.append(atom_order[first:first + chunk_atoms])
        edges.append(chunk_edges)
        local_i.append(edge_rank.index_select(0, chunk_edges) - first)
    return atoms, edges, local_i


def receptive_sets(edge_index: torch.Tensor, wanted: torch.Tensor, n_layers: int) -> List[torch.Tensor]:
    """Per layer, the atoms ([N] bool) whose outputs the energies of the ``wanted`` atoms depend on: the last layer
    needs only them, each earlier layer also the neighbours of the next one's. With MPI, LAMMPS ghosts fill a shell
    of n_layers × R_c around a rank's atoms; this evaluates layer l only within (n_layers − 1 − l) × R_c of them."""
    sets: List[torch.Tensor] = [wanted]
    current = wanted
    for _ in range(n_layers - 1):
        reached = edge_index[1][current.index_select(0, edge_index[0])]
        current = current.index_fill(0, reached, True)
        sets.insert(0, current)
    return sets


def edge_forces(gradient: torch.Tensor, edge_index: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """Forces [n_atoms, 3] from g_e = ∂E/∂x_e of every edge e = (i→j), x_e = r_j − r_i: F_i += g_e, F_j −= g_e."""
    forces = torch.zeros(n_atoms, 3, dtype=torch.float64, device=gradient.device)
    return forces.index_add(0, edge_index[0], gradient).index_add(0, edge_index[1], -gradient)


def edge_virials(edge_vectors: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Each edge's share [E, 3, 3] of the virial W = −Σ_e x_e ⊗ g_e (the strain derivative −∂E/∂ε, exact also for
    a model that is not rotation invariant)."""
    return -edge_vectors.unsqueeze(2) * gradient.unsqueeze(1)


class PET(nn.Module):
    def __init__(
        self,
        atomic_numbers: List[int],
        cutoff: float = 4.0,
        cutoff_width: float = 0.2,
        d_model: int = 128,
        n_heads: int = 4,
        d_ff: int = 512,
        n_gnn_layers: int = 4,
        n_transformer_layers: int = 2,
        head_hidden: int = 128,
        neighbor_species_every_layer: bool = True,
    ):
        super().__init__()
        self.atomic_numbers: List[int] = [int(z) for z in atomic_numbers]
        self.cutoff = float(cutoff)
        self.cutoff_width = float(cutoff_width)
        self.n_gnn_layers = n_gnn_layers
        n_species = len(self.atomic_numbers)
        z_to_index = torch.full((119,), -1, dtype=torch.long)
        for k, z in enumerate(self.atomic_numbers):
            z_to_index[z] = k
        self.register_buffer("z_to_index", z_to_index)
        self.register_buffer("composition_energies", torch.zeros(n_species, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))
        # inference with forces on more atoms than this runs in chunks with recomputation (bounded memory; see
        # energies_and_gradient_chunked); 0 = never, -1 = the device's default. Not a parameter: checkpoints are
        # unchanged.
        self.chunk_atoms: int = -1
        self.default_chunk_atoms_cpu: int = DEFAULT_CHUNK_ATOMS_CPU
        self.default_chunk_atoms_gpu: int = DEFAULT_CHUNK_ATOMS_GPU
        self.neighbor_embedding = nn.Embedding(n_species, d_model)
        self.ecse_frames = LocalFrames(self.cutoff)  # no parameters: checkpoints are unchanged
        self.layers = nn.ModuleList(
            [
                GNNLayer(n_species, d_model, n_heads, d_ff, n_transformer_layers, head_hidden,
                         with_neighbor_species=(k > 0 and neighbor_species_every_layer), cutoff=cutoff)
                for k in range(n_gnn_layers)
            ]
        )

    def _apply(self, fn, recurse=True):
        # .to(dtype) converts the network; the energy baseline and scale stay float64 (see atomic_energies)
        super()._apply(fn, recurse)
        self.composition_energies = self.composition_energies.to(torch.float64)
        self.energy_scale = self.energy_scale.to(torch.float64)
        return self

    def species_index(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        if atomic_numbers.numel() > 0:
            if bool((atomic_numbers < 0).any()) or bool((atomic_numbers > 118).any()):
                raise RuntimeError("atomic numbers must be in 1..118")
        index = self.z_to_index.index_select(0, atomic_numbers)
        if bool((index < 0).any()):
            unknown: List[int] = torch.unique(atomic_numbers[index < 0]).tolist()
            raise RuntimeError(
                "atomic numbers " + str(unknown) + " are not species of this model; its species are "
                + str(self.atomic_numbers)
            )
        return index

    def edge_vectors(self, positions: torch.Tensor, edge_index: torch.Tensor,
                     shift_vectors: torch.Tensor) -> torch.Tensor:
        """x_ij = r_j − r_i + shift [E, 3], as differences of float64 positions kept in float64 (the network casts
        them): a float32 model keeps Å-level precision even in boxes of 100 Å and more, and ECSE frames are built in
        float64."""
        vectors = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) + shift_vectors
        return vectors.to(torch.float64)

    def edge_geometry(self, edge_vectors: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vectors, r, f_c, log f_c) of float64 edge vectors, in the network's dtype."""
        vectors = edge_vectors.to(self.neighbor_embedding.weight.dtype)
        r = torch.linalg.norm(vectors, dim=1)
        # edges at or beyond R_c (a list built with a skin) behave exactly as absent ones
        inside = r < self.cutoff
        fc = torch.where(inside, cutoff_function(r, self.cutoff, self.cutoff_width), torch.zeros_like(r))
        log_fc = torch.where(inside, torch.log(fc.clamp(min=1e-30)), torch.full_like(r, float("-inf")))
        return vectors, r, fc, log_fc

    def atomic_energies(self, species: torch.Tensor, edge_vectors: torch.Tensor, edge_index: torch.Tensor,
                        reverse: torch.Tensor, ecse: bool = False) -> torch.Tensor:
        """Per-atom energies y_i [N] (eV) from species indices and float64 edge vectors (autograd flows through
        these). ``ecse``: every layer's per-atom network runs in each atom's local frames and its output tokens are
        averaged over them (model/ecse.py), which makes the energies exactly invariant."""
        n_atoms = species.shape[0]
        edge_i = edge_index[0]
        edge_j = edge_index[1]
        vectors, r, fc, log_fc = self.edge_geometry(edge_vectors)

        # the per-atom network runs on "copies": one per atom as trained, or one per ECSE frame of each atom
        copy_atom = torch.arange(n_atoms, device=r.device)
        copy_edge = torch.arange(edge_i.shape[0], device=r.device)
        copy_of_edge = edge_i
        copy_weight = torch.ones(0, dtype=r.dtype, device=r.device)
        copy_edge_weight = copy_weight
        geometry_input = torch.cat([vectors, r.unsqueeze(1)], dim=1)
        if ecse:
            copy_atom, rotations, weights = self.ecse_frames(edge_vectors, edge_i, n_atoms)
            copy_of_edge, copy_edge = copy_edges(edge_i, copy_atom, n_atoms)
            rotated = torch.bmm(edge_vectors.index_select(0, copy_edge).unsqueeze(1),
                                rotations.index_select(0, copy_of_edge)).squeeze(1)
            geometry_input = torch.cat([rotated.to(r.dtype), r.index_select(0, copy_edge).unsqueeze(1)], dim=1)
            copy_weight = weights.to(r.dtype).unsqueeze(1)
            copy_edge_weight = copy_weight.index_select(0, copy_of_edge)
        n_copies = copy_atom.shape[0]
        pad_index, max_neighbors = padded_layout(copy_of_edge, n_copies)
        key_mask = attention_mask(log_fc.index_select(0, copy_edge), pad_index, n_copies, max_neighbors)
        copy_species = species.index_select(0, copy_atom)

        neighbor_embedding = self.neighbor_embedding(species.index_select(0, edge_j))
        copy_neighbors = neighbor_embedding.index_select(0, copy_edge) if ecse else neighbor_embedding
        messages = neighbor_embedding
        energy = torch.zeros(n_atoms, dtype=r.dtype, device=r.device)
        for layer in self.layers:
            copy_messages = messages.index_select(0, copy_edge) if ecse else messages
            central_out, edge_out = layer(geometry_input, copy_messages, copy_neighbors, copy_species, key_mask,
                                          pad_index, max_neighbors)
            if ecse:  # the frame average of each atom's tokens
                central_out = torch.zeros(n_atoms, central_out.shape[1], dtype=r.dtype, device=r.device).index_add(
                    0, copy_atom, central_out * copy_weight)
                edge_out = torch.zeros(edge_i.shape[0], edge_out.shape[1], dtype=r.dtype, device=r.device).index_add(
                    0, copy_edge, edge_out * copy_edge_weight)
            central, bond = layer.readout(central_out, edge_out)
            energy = energy + central
            energy = energy.index_add(0, edge_i, bond * fc)
            messages = 0.5 * (messages + edge_out.index_select(0, reverse))
        # the network may run in float32; energies are scaled and summed in float64 (cells hold ~10^5 eV)
        baseline = self.composition_energies.index_select(0, species)
        return self.energy_scale * energy.to(torch.float64) + baseline

    def chunk_size(self, device: torch.device) -> int:
        """Atoms per chunk of inference with forces: the set value, or the device's default (chunk_atoms = -1)."""
        if self.chunk_atoms >= 0:
            return self.chunk_atoms
        return self.default_chunk_atoms_cpu if device.type == "cpu" else self.default_chunk_atoms_gpu

    def layer_forward(self, target: int, chunks: Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]],
                      species: torch.Tensor, neighbors: torch.Tensor, edge_vectors: torch.Tensor,
                      messages: torch.Tensor, energy: torch.Tensor, edge_out: torch.Tensor) -> None:
        """Layer ``target`` without autograd, chunk by chunk (``atom_chunks``): adds its energies into ``energy``
        [N] and writes its output tokens of the chunks' edges into ``edge_out`` [E, d] (in place: an out-of-place
        update would copy the whole [E, d] tensor once per chunk)."""
        chunk_atoms_list, chunk_edges, chunk_local_i = chunks
        # TorchScript cannot index a ModuleList with a variable: find the layer by walking the list
        for k, layer in enumerate(self.layers):
            if k == target:
                with torch.no_grad():
                    for c in range(len(chunk_edges)):
                        atoms, edges = chunk_atoms_list[c], chunk_edges[c]
                        vectors, r, fc, log_fc = self.edge_geometry(edge_vectors.index_select(0, edges))
                        e_c, out_c = layer.on_atoms(vectors, r, fc, log_fc, messages.index_select(0, edges),
                                                    neighbors.index_select(0, edges), species.index_select(0, atoms),
                                                    chunk_local_i[c])
                        energy.index_add_(0, atoms, e_c)
                        edge_out.index_copy_(0, edges, out_c)

    def layer_backward(self, target: int, chunks: Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]],
                       species: torch.Tensor, neighbors: torch.Tensor, edge_vectors: torch.Tensor,
                       messages: torch.Tensor, weight: torch.Tensor, adjoint_source: torch.Tensor,
                       adjoint_index: torch.Tensor, adjoint_scale: float, energy: Optional[torch.Tensor],
                       gradient: torch.Tensor, input_adjoint: torch.Tensor) -> None:
        """Layer ``target`` re-run with autograd, chunk by chunk, pulling the adjoint of its outputs back to its
        inputs: the objective is Σ_i weight_i y_i + Σ_e a_e · out_e with a_e = adjoint_scale ·
        adjoint_source[adjoint_index[e]]. Adds ∂/∂x_e into ``gradient`` [E, 3] (float64) and ∂/∂messages_e into
        ``input_adjoint`` [E, d]; adds the layer's energies into ``energy`` when one is given."""
        chunk_atoms_list, chunk_edges, chunk_local_i = chunks
        for k, layer in enumerate(self.layers):
            if k == target:
                for c in range(len(chunk_edges)):
                    atoms, edges = chunk_atoms_list[c], chunk_edges[c]
                    vectors_c = edge_vectors.index_select(0, edges).requires_grad_(True)
                    messages_c = messages.index_select(0, edges).requires_grad_(True)
                    vectors, r, fc, log_fc = self.edge_geometry(vectors_c)
                    e_c, out_c = layer.on_atoms(vectors, r, fc, log_fc, messages_c, neighbors.index_select(0, edges),
                                                species.index_select(0, atoms), chunk_local_i[c])
                    if energy is not None:
                        energy.index_add_(0, atoms, e_c.detach())
                    output_adjoint = adjoint_scale * adjoint_source.index_select(0, adjoint_index.index_select(0, edges))
                    objective = (e_c * weight.index_select(0, atoms)).sum() + (out_c * output_adjoint).sum()
                    grads = torch.autograd.grad([objective], [vectors_c, messages_c], allow_unused=True)
                    g_vectors, g_messages = grads[0], grads[1]
                    if g_vectors is not None:
                        gradient.index_add_(0, edges, g_vectors.to(torch.float64))
                    if g_messages is not None:
                        input_adjoint.index_add_(0, edges, g_messages)

    def energies_and_gradient_chunked(self, species: torch.Tensor, edge_vectors: torch.Tensor,
                                      edge_index: torch.Tensor, reverse: torch.Tensor, atom_weight: torch.Tensor,
                                      chunk_atoms: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-atom energies [N] and g = ∂(Σ_i w_i y_i)/∂x_e [E, 3] with memory bounded by ``chunk_atoms``.

        A plain backward pass keeps every activation of every layer for all atoms (~3 MiB per atom for the study
        model: 12,288 water atoms do not fit in 24 GiB). Here a forward pass without autograd keeps only each
        layer's input messages [E, d]; the backward pass then walks the layers in reverse and, chunk by chunk of
        atoms, re-runs the layer with autograd and pulls the adjoints of its outputs back to its inputs (edge
        vectors, messages). Cost: one more forward pass of all layers but the last. Atoms are chunked in order of
        neighbour count, so each chunk pads its neighbour tokens to nearly its own count rather than to the largest
        in the system.
        Results equal the plain path's to round-off."""
        n_atoms = species.shape[0]
        n_edges = edge_vectors.shape[0]
        device = edge_vectors.device
        edge_vectors = edge_vectors.detach()
        active = receptive_sets(edge_index, atom_weight != 0, self.n_gnn_layers)
        layer_chunks: List[Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]] = []
        for wanted in active:
            layer_chunks.append(atom_chunks(edge_index[0], wanted, chunk_atoms))

        dtype = self.neighbor_embedding.weight.dtype
        weight = (self.energy_scale * atom_weight.to(torch.float64)).to(dtype)
        neighbors = self.neighbor_embedding(species.index_select(0, edge_index[1])).detach()
        layer_inputs: List[torch.Tensor] = []
        energy = torch.zeros(n_atoms, dtype=dtype, device=device)
        last = self.n_gnn_layers - 1
        messages = neighbors
        for k in range(last + 1):
            layer_inputs.append(messages)
            # the reverse pass runs the last layer first and takes its energies from there
            if k < last:
                edge_out = torch.zeros_like(messages)  # edges of atoms outside this layer's set stay unused
                self.layer_forward(k, layer_chunks[k], species, neighbors, edge_vectors, messages, energy, edge_out)
                messages = edge_out.index_select(0, reverse).add_(messages).mul_(0.5)

        gradient = torch.zeros(n_edges, 3, dtype=torch.float64, device=device)
        message_adjoint = torch.zeros(n_edges, neighbors.shape[1], dtype=dtype, device=device)  # ∂/∂ messages_(l+1)
        for k in range(last, -1, -1):
            input_adjoint = 0.5 * message_adjoint
            # ∂/∂ edge_out of this layer's edges: half the adjoint of the reverse edges' next messages
            self.layer_backward(k, layer_chunks[k], species, neighbors, edge_vectors, layer_inputs[k], weight,
                                message_adjoint, reverse, 0.5, energy if k == last else None, gradient,
                                input_adjoint)
            message_adjoint = input_adjoint
            layer_inputs[k] = neighbors  # this layer's inputs are no longer needed (the first one is this)
        baseline = self.composition_energies.index_select(0, species)
        return self.energy_scale * energy.to(torch.float64) + baseline, gradient

    # --- message exchange across MPI ranks (cpp/model.cpp, compute_exchanged; docs/pair_pet.md) ---------------------
    # A rank evaluates its own atoms only. Between layers it trades output tokens with its neighbours: it receives
    # those of the edges of its ghost atoms and sends back the adjoints of the ones it used. The caller (C++) runs
    # the layers in order, does the exchange and builds each next layer's messages ½(m_e + out[reverse_e]), where
    # out = [this rank's edge outputs; received ghost outputs]. Edges: edge_i indexes the n central atoms, the
    # vectors x_e are float64, neighbour species come per edge.

    def message_layer(self, target: int, atomic_numbers: torch.Tensor, neighbor_numbers: torch.Tensor,
                      edge_i: torch.Tensor, edge_vectors: torch.Tensor,
                      messages: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer ``target`` without autograd: its energies [n] (network dtype, unscaled), output tokens [E, d] and
        the messages it used: ``messages``, except for layer 0, whose messages are the neighbour embeddings."""
        species, neighbors, messages = self._layer_inputs(target, atomic_numbers, neighbor_numbers, messages)
        energy = torch.zeros(species.shape[0], dtype=neighbors.dtype, device=neighbors.device)
        edge_out = torch.zeros_like(neighbors)
        self.layer_forward(target, self._all_atom_chunks(edge_i, species.shape[0]), species, neighbors,
                           edge_vectors.detach(), messages, energy, edge_out)
        return energy, edge_out, messages

    def message_layer_backward(self, target: int, atomic_numbers: torch.Tensor, neighbor_numbers: torch.Tensor,
                               edge_i: torch.Tensor, edge_vectors: torch.Tensor, messages: torch.Tensor,
                               output_adjoint: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer ``target`` re-run with autograd for the objective Σ_i s·y_i + Σ_e output_adjoint_e · out_e
        (s = energy scale): its energies [n] (unscaled), ∂/∂x_e [E, 3] (float64) and ∂/∂messages_e [E, d]."""
        species, neighbors, messages = self._layer_inputs(target, atomic_numbers, neighbor_numbers, messages)
        n_atoms, n_edges = species.shape[0], edge_i.shape[0]
        dtype, device = neighbors.dtype, neighbors.device
        energy = torch.zeros(n_atoms, dtype=dtype, device=device)
        weight = self.energy_scale.to(dtype).expand(n_atoms)
        gradient = torch.zeros(n_edges, 3, dtype=torch.float64, device=device)
        input_adjoint = torch.zeros_like(neighbors)
        self.layer_backward(target, self._all_atom_chunks(edge_i, n_atoms), species, neighbors,
                            edge_vectors.detach(), messages, weight, output_adjoint.to(dtype),
                            torch.arange(n_edges, device=device), 1.0, energy, gradient, input_adjoint)
        return energy, gradient, input_adjoint

    def message_result(self, atomic_numbers: torch.Tensor, layer_energies: torch.Tensor, edge_index: torch.Tensor,
                       edge_vectors: torch.Tensor, gradient: torch.Tensor, n_all: int) -> Dict[str, torch.Tensor]:
        """energy, energies [n] of the central atoms, forces [n_all, 3] on every atom the edges reach (edge_index[1]
        indexes those n_all atoms) and virial [3, 3], from the summed layer energies and ∂E/∂x_e."""
        species = self.species_index(atomic_numbers)
        energies = (self.energy_scale * layer_energies.to(torch.float64)
                    + self.composition_energies.index_select(0, species))
        forces = edge_forces(gradient, edge_index, n_all)
        virial = edge_virials(edge_vectors, gradient).sum(0)
        return {"energy": energies.sum(), "energies": energies, "forces": forces, "virial": virial}

    def _layer_inputs(self, target: int, atomic_numbers: torch.Tensor, neighbor_numbers: torch.Tensor,
                      messages: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Species indices, neighbour embeddings and the messages of layer ``target`` (layer 0: the embeddings)."""
        species = self.species_index(atomic_numbers)
        neighbors = self.neighbor_embedding(self.species_index(neighbor_numbers)).detach()
        return species, neighbors, neighbors if target == 0 else messages

    def _all_atom_chunks(self, edge_i: torch.Tensor,
                         n_atoms: int) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        chunk = self.chunk_size(edge_i.device)
        return atom_chunks(edge_i, torch.ones(n_atoms, dtype=torch.bool, device=edge_i.device),
                           chunk if chunk > 0 else max(n_atoms, 1))

    def forward(
        self,
        positions: torch.Tensor,  # [N, 3]
        atomic_numbers: torch.Tensor,  # [N] int64
        edge_index: torch.Tensor,  # [2, E] int64
        shift_vectors: torch.Tensor,  # [E, 3]: S · cell of each edge
        reverse: torch.Tensor,  # [E] int64
        structure: torch.Tensor,  # [N] int64: which structure each atom belongs to
        n_structures: int,
        energy_mask: Optional[torch.Tensor] = None,  # [N] bool: whose energies to sum (default all)
        compute_forces: bool = True,
        compute_virial: bool = False,
        create_graph: bool = False,
        ecse: bool = False,  # exact symmetrization (see atomic_energies)
    ) -> Dict[str, torch.Tensor]:
        """energy [n_structures], energies [N], and optionally forces [N, 3] and virial [n_structures, 3, 3],
        all float64 whatever the network's dtype (positions and shift vectors should be float64 too). With an
        energy_mask, energies are those of the masked atoms and 0 for the others (which the chunked path evaluates
        only as far as the masked atoms' energies depend on them).

        Forces and virial come from g_e = ∂E/∂x_e for every edge (edge_forces, edge_virials).
        """
        species = self.species_index(atomic_numbers)
        edge_i = edge_index[0]
        edge_vectors = self.edge_vectors(positions, edge_index, shift_vectors)
        need_grad = compute_forces or compute_virial
        chunk_atoms = self.chunk_size(positions.device)
        chunked = need_grad and not create_graph and not ecse and 0 < chunk_atoms < species.shape[0]
        g = torch.zeros(0, 3, dtype=torch.float64, device=positions.device)
        if chunked:
            weight = torch.ones_like(positions[:, 0]) if energy_mask is None else energy_mask.to(torch.float64)
            energies, g = self.energies_and_gradient_chunked(species, edge_vectors, edge_index, reverse, weight,
                                                             chunk_atoms)
        else:
            if need_grad and not edge_vectors.requires_grad:
                edge_vectors.requires_grad_(True)
            energies = self.atomic_energies(species, edge_vectors, edge_index, reverse, ecse)
        summed = energies if energy_mask is None else torch.where(energy_mask, energies, torch.zeros_like(energies))
        energy = torch.zeros(n_structures, dtype=energies.dtype, device=energies.device).index_add(
            0, structure, summed)
        out: Dict[str, torch.Tensor] = {"energy": energy, "energies": summed}
        if need_grad:
            if not chunked:
                grads = torch.autograd.grad([energy.sum()], [edge_vectors], create_graph=create_graph,
                                            allow_unused=True)
                grad = grads[0]
                g = torch.zeros_like(edge_vectors) if grad is None else grad.to(torch.float64)
            if compute_forces:
                out["forces"] = edge_forces(g, edge_index, positions.shape[0])
            if compute_virial:
                per_edge = edge_virials(edge_vectors, g)
                virial = torch.zeros(n_structures, 3, 3, dtype=torch.float64, device=g.device)
                out["virial"] = virial.index_add(0, structure.index_select(0, edge_i), per_edge)
        return out
