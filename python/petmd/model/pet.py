"""The Point Edge Transformer (Pozdnyakov & Ceriotti, NeurIPS 2023; docs/pet.md); docs/architecture.md shows how
petmd runs it.

N atoms and E directed edges (i→j, vector x_ij); the layers are in model/layers.py. After each message-passing layer
the message of edge ij becomes ½(m_ij + output token of the reverse edge ji) (graph.next_messages).

Energies: y_i = scale · Σ_layers [H_c(central_i) + Σ_j f_c(r_ij) H_b(edge_ij)] + e_{species_i}.
Forces and virial come from one gradient of the energy w.r.t. the edge vectors (see ``forward``).
The module is TorchScript-compatible; ``petmd export`` scripts it unchanged.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..config import ModelConfig
from .cutoff import cutoff_function
from .ecse import LocalFrames, copy_edges
from .exchange import ExchangeLayers
from .graph import edge_forces, edge_virials, next_messages
from .layers import GNNLayer, attention_mask, padded_layout

# Chunk sizes of inference with forces when none is set (chunk_atoms = -1): on a CPU small chunks keep each
# chunk's working set in cache, a GPU needs large ones to stay busy (the measurements: docs/benchmarks.md).
DEFAULT_CHUNK_ATOMS_CPU = 128
DEFAULT_CHUNK_ATOMS_GPU = 4096


class PET(ExchangeLayers):
    """PET for the species ``atomic_numbers`` with the hyper-parameters of ``config`` (petmd.config.ModelConfig,
    where each is described and has its default)."""

    def __init__(self, atomic_numbers: List[int], config: ModelConfig):
        super().__init__()
        cutoff, d_model = config.cutoff, config.d_model
        self.atomic_numbers: List[int] = [int(z) for z in atomic_numbers]
        self.cutoff = float(cutoff)
        self.cutoff_width = float(config.cutoff_width)
        self.n_gnn_layers = config.n_gnn_layers
        self.features_per_layer: int = 2 * (config.head_hidden + 1)  # GNNLayer.readout_with_features
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
                GNNLayer(
                    n_species,
                    d_model,
                    config.n_heads,
                    config.d_ff,
                    config.n_transformer_layers,
                    config.head_hidden,
                    with_neighbor_species=(k > 0 and config.neighbor_species_every_layer),
                    cutoff=cutoff,
                )
                for k in range(config.n_gnn_layers)
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
                "atomic numbers "
                + str(unknown)
                + " are not species of this model; its species are "
                + str(self.atomic_numbers)
            )
        return index

    def edge_vectors(
        self, positions: torch.Tensor, edge_index: torch.Tensor, shift_vectors: torch.Tensor
    ) -> torch.Tensor:
        """x_ij = r_j − r_i + shift [E, 3], as differences of float64 positions kept in float64 (the network casts
        them): a float32 model keeps Å-level precision even in boxes of 100 Å and more, and ECSE frames are built in
        float64."""
        vectors = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) + shift_vectors
        return vectors.to(torch.float64)

    def edge_geometry(
        self, edge_vectors: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vectors, r, f_c, log f_c) of float64 edge vectors, in the network's dtype."""
        vectors = edge_vectors.to(self.neighbor_embedding.weight.dtype)
        r = torch.linalg.norm(vectors, dim=1)
        # edges at or beyond R_c (a list built with a skin) behave exactly as absent ones
        inside = r < self.cutoff
        fc = torch.where(inside, cutoff_function(r, self.cutoff, self.cutoff_width), torch.zeros_like(r))
        log_fc = torch.where(inside, torch.log(fc.clamp(min=1e-30)), torch.full_like(r, float("-inf")))
        return vectors, r, fc, log_fc

    def atomic_energies(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        edge_index: torch.Tensor,
        reverse: torch.Tensor,
        ecse: bool = False,
    ) -> torch.Tensor:
        """Per-atom energies y_i [N] (eV) from species indices and float64 edge vectors (autograd flows through
        these). ``ecse``: every layer's per-atom network runs in each atom's local frames and its output tokens are
        averaged over them (model/ecse.py), which makes the energies exactly invariant."""
        return self.energies_and_features(species, edge_vectors, edge_index, reverse, ecse, False)[0]

    def energies_and_features(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        edge_index: torch.Tensor,
        reverse: torch.Tensor,
        ecse: bool,
        with_features: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """atomic_energies and, ``with_features``, the last-layer features [N, D] (see forward), else an empty
        tensor."""
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
            rotated = torch.bmm(
                edge_vectors.index_select(0, copy_edge).unsqueeze(1), rotations.index_select(0, copy_of_edge)
            ).squeeze(1)
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
        features: List[torch.Tensor] = []
        for layer in self.layers:
            copy_messages = messages.index_select(0, copy_edge) if ecse else messages
            central_out, edge_out = layer(
                geometry_input, copy_messages, copy_neighbors, copy_species, key_mask, pad_index, max_neighbors
            )
            if ecse:  # the frame average of each atom's tokens
                central_out = torch.zeros(n_atoms, central_out.shape[1], dtype=r.dtype, device=r.device).index_add(
                    0, copy_atom, central_out * copy_weight
                )
                edge_out = torch.zeros(edge_i.shape[0], edge_out.shape[1], dtype=r.dtype, device=r.device).index_add(
                    0, copy_edge, edge_out * copy_edge_weight
                )
            if with_features:
                central, bond, layer_features = layer.readout_with_features(central_out, edge_out, fc, edge_i)
                features.append(layer_features)
            else:
                central, bond = layer.readout(central_out, edge_out)
            energy = energy + central
            energy = energy.index_add(0, edge_i, bond * fc)
            messages = next_messages(messages, edge_out, reverse)
        # the network may run in float32; energies are scaled and summed in float64 (cells hold ~10^5 eV)
        baseline = self.composition_energies.index_select(0, species)
        scaled = torch.zeros(n_atoms, 0, dtype=torch.float64, device=r.device)
        if with_features:
            scaled = self.energy_scale * torch.cat(features, dim=1)
        return self.energy_scale * energy.to(torch.float64) + baseline, scaled

    def last_layer_weights(self) -> torch.Tensor:
        """w [D] (float64): every atom's energy is features_i · w + its composition baseline (see forward)."""
        return torch.cat([layer.last_layer_weights() for layer in self.layers])

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
        compute_features: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """energy [n_structures], energies [N], and optionally forces [N, 3], virial [n_structures, 3, 3] and
        features [N, D], all float64 whatever the network's dtype (positions and shift vectors should be float64
        too). With an energy_mask, energies are those of the masked atoms and 0 for the others (which the chunked
        path evaluates only as far as the masked atoms' energies depend on them).

        features: the last-layer features of each atom's energy, in which the energy is linear: energies_i =
        features_i · last_layer_weights() + composition baseline (per layer the scaled readout_with_features of
        model/layers.py; rows of atoms outside the mask are zero). Without gradients attached; the uncertainty
        (petmd.uncertainty) is a quadratic form of them.

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
            energies, g, features = self.energies_and_gradient_chunked(
                species, edge_vectors, edge_index, reverse, weight, chunk_atoms, compute_features
            )
        else:
            if need_grad and not edge_vectors.requires_grad:
                edge_vectors.requires_grad_(True)
            energies, features = self.energies_and_features(
                species, edge_vectors, edge_index, reverse, ecse, compute_features
            )
            if compute_features and energy_mask is not None:
                features = features * energy_mask.to(torch.float64).unsqueeze(1)
        summed = energies if energy_mask is None else torch.where(energy_mask, energies, torch.zeros_like(energies))
        energy = torch.zeros(n_structures, dtype=energies.dtype, device=energies.device).index_add(0, structure, summed)
        out: Dict[str, torch.Tensor] = {"energy": energy, "energies": summed}
        if compute_features:
            out["features"] = features
        if need_grad:
            if not chunked:
                grads = torch.autograd.grad(
                    [energy.sum()], [edge_vectors], create_graph=create_graph, allow_unused=True
                )
                grad = grads[0]
                g = torch.zeros_like(edge_vectors) if grad is None else grad.to(torch.float64)
            if compute_forces:
                out["forces"] = edge_forces(g, edge_index, positions.shape[0])
            if compute_virial:
                per_edge = edge_virials(edge_vectors, g)
                virial = torch.zeros(n_structures, 3, 3, dtype=torch.float64, device=g.device)
                out["virial"] = virial.index_add(0, structure.index_select(0, edge_i), per_edge)
        return out
