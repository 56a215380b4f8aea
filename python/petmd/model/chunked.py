"""Chunked evaluation with recomputation: energies and ∂E/∂x_e with memory bounded by a chunk of atoms.

A mixin of PET (model/pet.py), whose layers, edge geometry and embeddings it drives one layer and one chunk of atoms
at a time through ``GNNLayer.on_atoms``; the message exchange between MPI ranks (model/exchange.py) runs on the same
two layer drivers. TorchScript compiles these methods as PET's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
from torch import nn

from .graph import atom_chunks, message_adjoints, next_messages, receptive_sets

# atoms, edges and each edge's central atom (an index into the chunk's atoms) of every chunk: see graph.atom_chunks
Chunks = Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]


class ChunkedLayers(nn.Module):
    """The layer drivers; PET supplies the model itself (what the type checker is told below)."""

    if TYPE_CHECKING:
        layers: nn.ModuleList
        neighbor_embedding: nn.Embedding
        energy_scale: torch.Tensor
        composition_energies: torch.Tensor
        n_gnn_layers: int
        features_per_layer: int
        chunk_atoms: int
        default_chunk_atoms_cpu: int
        default_chunk_atoms_gpu: int

        def edge_geometry(
            self, edge_vectors: torch.Tensor
        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...

        def species_index(self, atomic_numbers: torch.Tensor) -> torch.Tensor: ...

    def chunk_size(self, device: torch.device) -> int:
        """Atoms per chunk of inference with forces: the set value, or the device's default (chunk_atoms = -1)."""
        if self.chunk_atoms >= 0:
            return self.chunk_atoms
        return self.default_chunk_atoms_cpu if device.type == "cpu" else self.default_chunk_atoms_gpu

    def layer_forward(
        self,
        target: int,
        chunks: Chunks,
        species: torch.Tensor,
        neighbors: torch.Tensor,
        edge_vectors: torch.Tensor,
        messages: torch.Tensor,
        energy: torch.Tensor,
        edge_out: torch.Tensor,
        features: Optional[torch.Tensor] = None,
    ) -> None:
        """Layer ``target`` without autograd, chunk by chunk (``atom_chunks``): adds its energies into ``energy``
        [N] and writes its output tokens of the chunks' edges into ``edge_out`` [E, d] (in place: an out-of-place
        update would copy the whole [E, d] tensor once per chunk), and the chunks' atoms' last-layer features into
        the rows of ``features`` [N, 2 (h + 1)] when one is given."""
        chunk_atoms_list, chunk_edges, chunk_local_i = chunks
        # TorchScript cannot index a ModuleList with a variable: find the layer by walking the list
        for k, layer in enumerate(self.layers):
            if k == target:
                with torch.no_grad():
                    for c in range(len(chunk_edges)):
                        atoms, edges = chunk_atoms_list[c], chunk_edges[c]
                        vectors, r, fc, log_fc = self.edge_geometry(edge_vectors.index_select(0, edges))
                        e_c, out_c, f_c = layer.on_atoms(
                            vectors,
                            r,
                            fc,
                            log_fc,
                            messages.index_select(0, edges),
                            neighbors.index_select(0, edges),
                            species.index_select(0, atoms),
                            chunk_local_i[c],
                            features is not None,
                        )
                        energy.index_add_(0, atoms, e_c)
                        edge_out.index_copy_(0, edges, out_c)
                        if features is not None:
                            features.index_copy_(0, atoms, f_c)

    def layer_backward(
        self,
        target: int,
        chunks: Chunks,
        species: torch.Tensor,
        neighbors: torch.Tensor,
        edge_vectors: torch.Tensor,
        messages: torch.Tensor,
        weight: torch.Tensor,
        output_adjoint: torch.Tensor,
        energy: Optional[torch.Tensor],
        gradient: torch.Tensor,
        input_adjoint: torch.Tensor,
        features: Optional[torch.Tensor] = None,
    ) -> None:
        """Layer ``target`` re-run with autograd, chunk by chunk, pulling the adjoint of its outputs back to its
        inputs: the objective is Σ_i weight_i y_i + Σ_e output_adjoint_e · out_e. Adds ∂/∂x_e into ``gradient``
        [E, 3] (float64) and ∂/∂messages_e into ``input_adjoint`` [E, d]; adds the layer's energies into ``energy``
        and writes the last-layer features into ``features`` when they are given."""
        chunk_atoms_list, chunk_edges, chunk_local_i = chunks
        for k, layer in enumerate(self.layers):
            if k == target:
                for c in range(len(chunk_edges)):
                    atoms, edges = chunk_atoms_list[c], chunk_edges[c]
                    vectors_c = edge_vectors.index_select(0, edges).requires_grad_(True)
                    messages_c = messages.index_select(0, edges).requires_grad_(True)
                    vectors, r, fc, log_fc = self.edge_geometry(vectors_c)
                    e_c, out_c, f_c = layer.on_atoms(
                        vectors,
                        r,
                        fc,
                        log_fc,
                        messages_c,
                        neighbors.index_select(0, edges),
                        species.index_select(0, atoms),
                        chunk_local_i[c],
                        features is not None,
                    )
                    if energy is not None:
                        energy.index_add_(0, atoms, e_c.detach())
                    if features is not None:
                        features.index_copy_(0, atoms, f_c)
                    objective = (e_c * weight.index_select(0, atoms)).sum() + (
                        out_c * output_adjoint.index_select(0, edges)
                    ).sum()
                    grads = torch.autograd.grad([objective], [vectors_c, messages_c], allow_unused=True)
                    g_vectors, g_messages = grads[0], grads[1]
                    if g_vectors is not None:
                        gradient.index_add_(0, edges, g_vectors.to(torch.float64))
                    if g_messages is not None:
                        input_adjoint.index_add_(0, edges, g_messages)

    def energies_and_gradient_chunked(
        self,
        species: torch.Tensor,
        edge_vectors: torch.Tensor,
        edge_index: torch.Tensor,
        reverse: torch.Tensor,
        atom_weight: torch.Tensor,
        chunk_atoms: int,
        with_features: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-atom energies [N], g = ∂(Σ_i w_i y_i)/∂x_e [E, 3] with memory bounded by ``chunk_atoms`` and,
        ``with_features``, the atoms' last-layer features [N, D] (PET.forward's ``features``; rows of atoms of weight
        0 are zero), else an empty tensor.

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
        layer_chunks: List[Chunks] = []
        for wanted in active:
            layer_chunks.append(atom_chunks(edge_index[0], wanted, chunk_atoms))

        dtype = self.neighbor_embedding.weight.dtype
        weight = (self.energy_scale * atom_weight.to(torch.float64)).to(dtype)
        neighbors = self.neighbor_embedding(species.index_select(0, edge_index[1])).detach()
        layer_inputs: List[torch.Tensor] = []
        energy = torch.zeros(n_atoms, dtype=dtype, device=device)
        width = self.features_per_layer
        n_features = width * self.n_gnn_layers if with_features else 0
        features = torch.zeros(n_atoms, n_features, dtype=torch.float64, device=device)
        last = self.n_gnn_layers - 1
        messages = neighbors
        for k in range(last + 1):
            layer_inputs.append(messages)
            # the reverse pass runs the last layer first and takes its energies from there
            if k < last:
                edge_out = torch.zeros_like(messages)  # edges of atoms outside this layer's set stay unused
                self.layer_forward(
                    k,
                    layer_chunks[k],
                    species,
                    neighbors,
                    edge_vectors,
                    messages,
                    energy,
                    edge_out,
                    features.narrow(1, k * width, width) if with_features else None,
                )
                messages = next_messages(messages, edge_out, reverse)

        gradient = torch.zeros(n_edges, 3, dtype=torch.float64, device=device)
        message_adjoint = torch.zeros(n_edges, neighbors.shape[1], dtype=dtype, device=device)  # ∂/∂ messages_(k+1)
        for k in range(last, -1, -1):
            # rebinding message_adjoint frees the old one: two [E, d] adjoints live, not three
            message_adjoint, output_adjoint = message_adjoints(message_adjoint, reverse)
            self.layer_backward(
                k,
                layer_chunks[k],
                species,
                neighbors,
                edge_vectors,
                layer_inputs[k],
                weight,
                output_adjoint,
                energy if k == last else None,
                gradient,
                message_adjoint,
                features.narrow(1, k * width, width) if with_features and k == last else None,
            )
            layer_inputs[k] = neighbors  # this layer's inputs are no longer needed (the first one is this)
        baseline = self.composition_energies.index_select(0, species)
        if with_features:
            features = self.energy_scale * features * (atom_weight != 0).to(torch.float64).unsqueeze(1)
        return self.energy_scale * energy.to(torch.float64) + baseline, gradient, features
