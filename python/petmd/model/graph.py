"""What PET does on the graph between layers: the message recurrence and its adjoint, chunks of atoms and the atoms a
layer must evaluate, and forces and virial from the gradient with respect to the edge vectors."""

from __future__ import annotations

from typing import List, Tuple

import torch


def atom_chunks(
    edge_i: torch.Tensor, active: torch.Tensor, chunk_atoms: int
) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
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
        chunk_edges = edge_order[edge_starts[c] : edge_starts[c + 1]]
        atoms.append(atom_order[first : first + chunk_atoms])
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


def next_messages(messages: torch.Tensor, edge_out: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
    """The message recurrence between layers: m_(k+1) of edge ij = ½(m_k of ij + output token of the reverse edge ji).
    (In place on a fresh tensor: no [E, d] temporary beyond the result, and autograd-safe.)"""
    return edge_out.index_select(0, reverse).add_(messages).mul_(0.5)


def message_adjoints(message_adjoint: torch.Tensor, reverse: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The recurrence's adjoint: from ∂/∂m_(k+1), the parts for m_k and for layer k's output tokens
    (∂/∂out_k of edge ji = ½ ∂/∂m_(k+1) of edge ij; ``reverse`` is an involution on a whole graph)."""
    return 0.5 * message_adjoint, 0.5 * message_adjoint.index_select(0, reverse)


def edge_forces(gradient: torch.Tensor, edge_index: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """Forces [n_atoms, 3] from g_e = ∂E/∂x_e of every edge e = (i→j), x_e = r_j − r_i: F_i += g_e, F_j −= g_e."""
    forces = torch.zeros(n_atoms, 3, dtype=torch.float64, device=gradient.device)
    return forces.index_add(0, edge_index[0], gradient).index_add(0, edge_index[1], -gradient)


def edge_virials(edge_vectors: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Each edge's share [E, 3, 3] of the virial W = −Σ_e x_e ⊗ g_e (the strain derivative −∂E/∂ε, exact also for
    a model that is not rotation invariant)."""
    return -edge_vectors.unsqueeze(2) * gradient.unsqueeze(1)
