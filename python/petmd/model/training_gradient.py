"""The parameter gradient of a loss on energies and forces, with memory bounded by a chunk of atoms.

The plain way (forces with ``create_graph=True``, then ``loss.backward()``) keeps every activation of the forward
pass and of the force backward pass for all atoms: ~10 MiB per atom for the study-size model, so one 864-atom water
frame needs ~9 GB. Here, for a loss L(E, F):

1. E and F come from the memory-bounded inference path; L is formed on detached copies, giving c_s = ∂L/∂E_s and
   G_i = ∂L/∂F_i.
2. Since F_i = −∂E/∂r_i, the chain rule gives dL/dθ = ∂S/∂θ for the scalar S = Σ_s c_s E_s − D_G E, where D_G E is
   the derivative of the energy when every atom i moves along G_i (edge vector x_ij along G_j − G_i). D_G E is a
   forward-mode derivative: S is one pass of primal and tangent values through the layers, a first-order function
   of θ, so its gradient can be taken layer by layer and chunk by chunk of atoms with recomputation, like the
   inference path (``PET.energies_and_gradient_chunked``).

Memory: each layer's input messages and their tangents [E, d] plus one chunk's graph; the study-size model trains
on one 864-atom frame in 2.1 GB with chunks of 512 atoms (9.0 GB the plain way) at the same speed, and on 4 such
frames in 2.9 GB. Each layer's tangents are written out in model/tangents.py. Results equal the plain path's to
round-off (tests/test_training_gradient.py).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import tangents
from .graph import atom_chunks, message_adjoints, next_messages
from .pet import PET


def accumulate_parameter_gradient(
    model: PET,
    species: torch.Tensor,
    edge_vectors: torch.Tensor,
    edge_index: torch.Tensor,
    reverse: torch.Tensor,
    energy_coefficient: torch.Tensor,
    force_coefficient: torch.Tensor,
    chunk_atoms: int,
    virial_coefficient: Optional[torch.Tensor] = None,
) -> None:
    """Adds ∂S/∂θ to the parameters' ``.grad``, S = Σ_i c_i y_i + Σ_i G_i·F_i + Σ_s H_s : W_s (y_i: atomic
    energies, W_s the virial −Σ_e x_e ⊗ ∂E/∂x_e of structure s).

    species [N] (model indices), edge_vectors [E, 3] float64, energy_coefficient c [N] (∂L/∂E of each atom's
    structure), force_coefficient G [N, 3] (∂L/∂F_i), virial_coefficient H [E, 3, 3] (∂L/∂W of each edge's
    structure) or None."""
    n_atoms = species.shape[0]
    dtype = model.neighbor_embedding.weight.dtype
    edge_i, edge_j = edge_index[0], edge_index[1]
    edge_vectors = edge_vectors.detach()
    force_coefficient = force_coefficient.detach().to(torch.float64)
    # moving every atom along G moves edge vector x_ij = r_j − r_i (+ shift) along G_j − G_i
    edge_tangent = force_coefficient.index_select(0, edge_j) - force_coefficient.index_select(0, edge_i)
    if virial_coefficient is not None:
        # H : W = −Σ_e (x_e H)·∂E/∂x_e, the same kind of term as Σ_i G_i·F_i: each edge also moves along x_e H
        edge_tangent = edge_tangent + torch.einsum("ea,eab->eb", edge_vectors, virial_coefficient.detach())
    # S = Σ_layers Σ_i scale·(c_i e_i − ė_i), since Σ_i G_i·F_i = −(derivative of E along G)
    scale = float(model.energy_scale)
    energy_weight = (scale * energy_coefficient.detach().to(torch.float64)).to(dtype)
    everyone = torch.ones(n_atoms, dtype=torch.bool, device=edge_i.device)
    chunks = list(zip(*atom_chunks(edge_i, everyone, max(chunk_atoms, 1))))
    layers = list(model.layers)

    neighbors_graph = model.neighbor_embedding(species.index_select(0, edge_j))  # θ enters through the embedding
    neighbors = neighbors_graph.detach()

    def run(layer, atoms, edges, local_i, messages, messages_tangent, neighbors_c):
        return tangents.on_atoms(
            model,
            layer,
            edge_vectors.index_select(0, edges),
            edge_tangent.index_select(0, edges),
            (messages, messages_tangent),
            neighbors_c,
            species.index_select(0, atoms),
            local_i,
        )

    # forward: keep each layer's input messages and their tangents [E, d], nothing else; the last layer's outputs
    # are needed only in the reverse pass, which starts with it
    inputs: List[Tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        messages, messages_tangent = neighbors, torch.zeros_like(neighbors)
        for layer in layers:
            inputs.append((messages, messages_tangent))
            if len(inputs) == len(layers):
                break
            out, out_tangent = torch.empty_like(messages), torch.empty_like(messages)
            for atoms, edges, local_i in chunks:
                _, (out_c, out_tangent_c) = run(
                    layer,
                    atoms,
                    edges,
                    local_i,
                    messages.index_select(0, edges),
                    messages_tangent.index_select(0, edges),
                    neighbors.index_select(0, edges),
                )
                out.index_copy_(0, edges, out_c)
                out_tangent.index_copy_(0, edges, out_tangent_c)
            messages = next_messages(messages, out, reverse)
            messages_tangent = next_messages(messages_tangent, out_tangent, reverse)

    # reverse: layer by layer, chunk by chunk, re-run with autograd; the adjoints ∂S/∂(messages, tangents) entering
    # layer k + 1 are pulled back to layer k's inputs, and each chunk's parameter gradient accumulates in .grad
    adjoint, adjoint_tangent = torch.zeros_like(neighbors), torch.zeros_like(neighbors)
    neighbor_adjoint = torch.zeros_like(neighbors)
    for k in range(len(layers) - 1, -1, -1):
        layer = layers[k]
        adjoint, out_adjoint = message_adjoints(adjoint, reverse)
        adjoint_tangent, out_adjoint_tangent = message_adjoints(adjoint_tangent, reverse)
        for atoms, edges, local_i in chunks:
            messages_c = inputs[k][0].index_select(0, edges).requires_grad_(True)
            tangent_c = inputs[k][1].index_select(0, edges).requires_grad_(k > 0)  # zero in the first layer
            neighbors_c = neighbors.index_select(0, edges).requires_grad_(layer.with_neighbor_species)
            leaves = [x for x in (messages_c, tangent_c, neighbors_c) if x.requires_grad]
            (energies, energies_tangent), (out_c, out_tangent_c) = run(
                layer, atoms, edges, local_i, messages_c, tangent_c, neighbors_c
            )
            objective = (
                (energy_weight.index_select(0, atoms) * energies).sum()
                - scale * energies_tangent.sum()
                + (out_c * out_adjoint.index_select(0, edges)).sum()
                + (out_tangent_c * out_adjoint_tangent.index_select(0, edges)).sum()
            )
            objective.backward(inputs=list(layer.parameters()) + leaves)
            assert messages_c.grad is not None  # every layer reads its messages
            adjoint.index_add_(0, edges, messages_c.grad)
            if tangent_c.grad is not None:
                adjoint_tangent.index_add_(0, edges, tangent_c.grad)
            if neighbors_c.grad is not None:
                neighbor_adjoint.index_add_(0, edges, neighbors_c.grad)
    neighbor_adjoint += adjoint  # the first layer's input messages are the neighbour embeddings
    neighbors_graph.backward(neighbor_adjoint)


def loss_and_gradient(
    model: PET,
    inputs: Dict[str, torch.Tensor],
    loss_fn: Callable[[Dict[str, torch.Tensor]], torch.Tensor],
    chunk_atoms: int,
    compute_virial: bool = False,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """loss_fn({"energy", "forces"[, "virial"]}) and its gradient, added to the parameters' ``.grad``; inputs as
    ``PET.forward`` takes them. In chunks of ``chunk_atoms`` when there are more atoms than that, else by the plain
    double backward (chunk_atoms ≤ 0: always). Returns the loss and the model's (detached) outputs."""
    keys = ["energy", "forces"] + (["virial"] if compute_virial else [])
    if not 0 < chunk_atoms < inputs["positions"].shape[0]:
        out = model(**inputs, compute_forces=True, compute_virial=compute_virial, create_graph=True)
        loss = loss_fn(out)
        loss.backward()
        return loss.detach(), {key: out[key].detach() for key in keys}
    out = model(**inputs, compute_forces=True, compute_virial=compute_virial)
    leaves = {key: out[key].detach().requires_grad_(True) for key in keys}
    loss = loss_fn(leaves)
    coefficients = torch.autograd.grad([loss], [leaves[key] for key in keys], allow_unused=True)
    energy_coefficient, force_coefficient = (
        torch.zeros_like(leaves[key]) if c is None else c for key, c in zip(keys[:2], coefficients[:2])
    )
    edge_index = inputs["edge_index"]
    virial_coefficient = None  # ∂L/∂W of each edge's structure
    if compute_virial and coefficients[2] is not None:
        virial_coefficient = coefficients[2].index_select(0, inputs["structure"].index_select(0, edge_index[0]))
    edge_vectors = model.edge_vectors(inputs["positions"], edge_index, inputs["shift_vectors"])
    species = model.species_index(inputs["atomic_numbers"])
    accumulate_parameter_gradient(
        model,
        species,
        edge_vectors,
        edge_index,
        inputs["reverse"],
        energy_coefficient.index_select(0, inputs["structure"]),
        force_coefficient,
        chunk_atoms,
        virial_coefficient,
    )
    return loss.detach(), {key: leaf.detach() for key, leaf in leaves.items()}
