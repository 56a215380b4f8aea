"""The layer-by-layer interface for message exchange across MPI ranks (cpp/model.cpp, compute_exchanged;
docs/pair_pet.md).

A rank evaluates its own atoms only. Between layers it trades output tokens with its neighbours: it receives those of
the edges of its ghost atoms and sends back the adjoints of the ones it used. The caller (C++) runs the layers in
order, does the exchange and builds each next layer's messages by the recurrence of graph.next_messages, where the
output tokens are [this rank's edge outputs; received ghost outputs]. Edges: edge_i indexes the n central atoms, the
vectors x_e are float64, neighbour species come per edge.

A mixin of PET (model/pet.py) over the layer drivers of model/chunked.py; TorchScript compiles these methods as PET's
own.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch

from .chunked import ChunkedLayers, Chunks
from .graph import atom_chunks, edge_forces, edge_virials


class ExchangeLayers(ChunkedLayers):
    def message_layer(
        self,
        target: int,
        atomic_numbers: torch.Tensor,
        neighbor_numbers: torch.Tensor,
        edge_i: torch.Tensor,
        edge_vectors: torch.Tensor,
        messages: torch.Tensor,
        with_features: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer ``target`` without autograd: its energies [n] (network dtype, unscaled), output tokens [E, d], the
        messages it used (``messages``, except for layer 0, whose messages are the neighbour embeddings) and,
        ``with_features``, its scaled last-layer features [n, features_per_layer] (else an empty tensor)."""
        species, neighbors, messages = self._layer_inputs(target, atomic_numbers, neighbor_numbers, messages)
        energy = torch.zeros(species.shape[0], dtype=neighbors.dtype, device=neighbors.device)
        edge_out = torch.zeros_like(neighbors)
        features = self._layer_features(species.shape[0], with_features, neighbors.device)
        self.layer_forward(
            target,
            self._all_atom_chunks(edge_i, species.shape[0]),
            species,
            neighbors,
            edge_vectors.detach(),
            messages,
            energy,
            edge_out,
            features if with_features else None,
        )
        return energy, edge_out, messages, self.energy_scale * features

    def message_layer_backward(
        self,
        target: int,
        atomic_numbers: torch.Tensor,
        neighbor_numbers: torch.Tensor,
        edge_i: torch.Tensor,
        edge_vectors: torch.Tensor,
        messages: torch.Tensor,
        output_adjoint: torch.Tensor,
        with_features: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer ``target`` re-run with autograd for the objective Σ_i s·y_i + Σ_e output_adjoint_e · out_e
        (s = energy scale): its energies [n] (unscaled), ∂/∂x_e [E, 3] (float64), ∂/∂messages_e [E, d] and the
        features as message_layer gives them."""
        species, neighbors, messages = self._layer_inputs(target, atomic_numbers, neighbor_numbers, messages)
        n_atoms, n_edges = species.shape[0], edge_i.shape[0]
        dtype, device = neighbors.dtype, neighbors.device
        energy = torch.zeros(n_atoms, dtype=dtype, device=device)
        weight = self.energy_scale.to(dtype).expand(n_atoms)
        gradient = torch.zeros(n_edges, 3, dtype=torch.float64, device=device)
        input_adjoint = torch.zeros_like(neighbors)
        features = self._layer_features(n_atoms, with_features, device)
        self.layer_backward(
            target,
            self._all_atom_chunks(edge_i, n_atoms),
            species,
            neighbors,
            edge_vectors.detach(),
            messages,
            weight,
            output_adjoint.to(dtype),
            energy,
            gradient,
            input_adjoint,
            features if with_features else None,
        )
        return energy, gradient, input_adjoint, self.energy_scale * features

    def message_result(
        self,
        atomic_numbers: torch.Tensor,
        layer_energies: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        gradient: torch.Tensor,
        n_all: int,
    ) -> Dict[str, torch.Tensor]:
        """energy, energies [n] of the central atoms, forces [n_all, 3] on every atom the edges reach (edge_index[1]
        indexes those n_all atoms) and virial [3, 3], from the summed layer energies and ∂E/∂x_e."""
        species = self.species_index(atomic_numbers)
        energies = self.energy_scale * layer_energies.to(torch.float64) + self.composition_energies.index_select(
            0, species
        )
        forces = edge_forces(gradient, edge_index, n_all)
        virial = edge_virials(edge_vectors, gradient).sum(0)
        return {"energy": energies.sum(), "energies": energies, "forces": forces, "virial": virial}

    def _layer_inputs(
        self, target: int, atomic_numbers: torch.Tensor, neighbor_numbers: torch.Tensor, messages: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Species indices, neighbour embeddings and the messages of layer ``target`` (layer 0: the embeddings)."""
        species = self.species_index(atomic_numbers)
        neighbors = self.neighbor_embedding(self.species_index(neighbor_numbers)).detach()
        return species, neighbors, neighbors if target == 0 else messages

    def _layer_features(self, n_atoms: int, with_features: bool, device: torch.device) -> torch.Tensor:
        width = self.features_per_layer if with_features else 0
        return torch.zeros(n_atoms, width, dtype=torch.float64, device=device)

    def _all_atom_chunks(self, edge_i: torch.Tensor, n_atoms: int) -> Chunks:
        chunk = self.chunk_size(edge_i.device)
        return atom_chunks(
            edge_i, torch.ones(n_atoms, dtype=torch.bool, device=edge_i.device), chunk if chunk > 0 else max(n_atoms, 1)
        )
