"""One PET layer on a chunk of atoms, carrying forward-mode tangents beside the values, in plain torch operations.

The memory-bounded training gradient (model/training_gradient.py) needs the derivative of the energies along a
displacement of the atoms (a forward-mode derivative) and then its gradient with respect to the parameters (reverse
mode through it). torch's forward mode cannot do it: in torch 2.13 the gradient of a layer_norm tangent with respect
to the layer's input is silently wrong (pytorch/pytorch#196700), under torch.func.jvp and torch.autograd.forward_ad
alike (forward_ad also fails outright through softmax, whose tangent it forms in place), and torch.func with
layer_norm spelled out takes 1.3-1.6x the time and 1.2-2.5x the memory of this file (benchmarks/forward_mode.py;
docs/benchmarks.md). Written out here, each tangent costs about one more forward pass and differentiates like any
torch code. Every function mirrors a module of model/pet.py on (value, tangent) pairs;
tests/test_training_gradient.py checks the whole against the plain double backward.
"""

from __future__ import annotations

import math
from typing import Tuple, cast

import torch
from torch import nn
from torch.nn import functional as F

from .layers import (
    MLP,
    Attention,
    GNNLayer,
    TransformerLayer,
    attention_mask,
    edge_rows,
    padded_layout,
    per_atom_layout,
)
from .pet import PET

Pair = Tuple[torch.Tensor, torch.Tensor]


def linear(module: nn.Linear, x: torch.Tensor, t: torch.Tensor) -> Pair:
    return F.linear(x, module.weight, module.bias), F.linear(t, module.weight)


def silu(x: torch.Tensor, t: torch.Tensor) -> Pair:
    s = torch.sigmoid(x)
    y = x * s
    return y, t * (s + y * (1.0 - s))


def mlp(module: MLP, x: torch.Tensor, t: torch.Tensor) -> Pair:
    for layer in module.net:
        x, t = linear(layer, x, t) if isinstance(layer, nn.Linear) else silu(x, t)
    return x, t


def layer_norm(module: nn.LayerNorm, x: torch.Tensor, t: torch.Tensor) -> Pair:
    # The Jacobian of the normalisation (before the affine part) is symmetric, so its tangent is its backward
    # pass applied to t: one fused kernel, whose own derivative torch gives correctly (second order).
    shape = list(module.normalized_shape)
    normed, mean, rstd = torch.ops.aten.native_layer_norm(x, shape, None, None, module.eps)
    normed_t = torch.ops.aten.native_layer_norm_backward(t, x, shape, mean, rstd, None, None, [True, False, False])[0]
    return normed * module.weight + module.bias, normed_t * module.weight


def attention(module: Attention, x: torch.Tensor, t: torch.Tensor, key_mask: Pair) -> Pair:
    n, tokens, d = x.shape
    shape = (n, tokens, 3, module.n_heads, module.d_head)
    qkv, qkv_t = linear(module.qkv, x, t)
    q, k, v = qkv.view(shape).permute(2, 0, 3, 1, 4)
    q_t, k_t, v_t = qkv_t.view(shape).permute(2, 0, 3, 1, 4)
    scale = 1.0 / math.sqrt(module.d_head)
    mask, mask_t = key_mask
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale + mask[:, None, None, :]
    logits_t = (torch.matmul(q_t, k.transpose(-1, -2)) + torch.matmul(q, k_t.transpose(-1, -2))) * scale + mask_t[
        :, None, None, :
    ]
    weights = torch.softmax(logits, dim=-1)
    weights_t = weights * (logits_t - (weights * logits_t).sum(dim=-1, keepdim=True))
    y = torch.matmul(weights, v)
    y_t = torch.matmul(weights_t, v) + torch.matmul(weights, v_t)
    return linear(module.out, y.transpose(1, 2).reshape(n, tokens, d), y_t.transpose(1, 2).reshape(n, tokens, d))


def transformer_layer(module: TransformerLayer, x: torch.Tensor, t: torch.Tensor, key_mask: Pair) -> Pair:
    a, a_t = attention(module.attention, x, t, key_mask)
    x, t = layer_norm(module.norm1, x + a, t + a_t)
    m, m_t = mlp(module.mlp, x, t)
    return layer_norm(module.norm2, x + m, t + m_t)


def edge_geometry(model: PET, edge_vectors: torch.Tensor, tangent: torch.Tensor):
    """PET.edge_geometry's (vectors, r, f_c, log f_c), each as a (value, tangent) pair."""
    vectors, r, fc, log_fc = model.edge_geometry(edge_vectors)
    vectors_t = tangent.to(vectors.dtype)
    r_t = (vectors * vectors_t).sum(dim=1) / r
    # f_c = ½ + ½ cos(π s), s = (r − R_c + Δ)/Δ clamped to [0, 1]; constant outside the switching region
    s = (r - (model.cutoff - model.cutoff_width)) / model.cutoff_width
    switching = (s > 0.0) & (s < 1.0)
    dfc_dr = torch.where(switching, -0.5 * math.pi / model.cutoff_width * torch.sin(math.pi * s), torch.zeros_like(r))
    fc_t = dfc_dr * r_t
    # log f_c is clamped at 1e-30 and −inf beyond R_c; there its tangent is zero, like its gradient
    log_fc_t = torch.where(fc > 1e-30, fc_t / fc.clamp(min=1e-30), torch.zeros_like(r))
    return (vectors, vectors_t), (r, r_t), (fc, fc_t), (log_fc, log_fc_t)


def on_atoms(
    model: PET,
    layer: GNNLayer,
    edge_vectors: torch.Tensor,
    edge_tangent: torch.Tensor,
    messages: Pair,
    neighbor_embedding: torch.Tensor,
    species: torch.Tensor,
    local_i: torch.Tensor,
) -> Tuple[Pair, Pair]:
    """GNNLayer.on_atoms with tangents: (energies of the chunk's atoms, output edge tokens), each a pair. The
    neighbour embeddings depend on species only: their tangent is zero."""
    (vectors, vectors_t), (r, r_t), (fc, fc_t), (log_fc, log_fc_t) = edge_geometry(model, edge_vectors, edge_tangent)
    n_atoms = species.shape[0]
    pad_index, max_neighbors = padded_layout(local_i, n_atoms)

    geometry = linear(
        layer.geometry, torch.cat([vectors, r.unsqueeze(1)], dim=1), torch.cat([vectors_t, r_t.unsqueeze(1)], dim=1)
    )
    parts, parts_t = [geometry[0], messages[0]], [geometry[1], messages[1]]
    if layer.with_neighbor_species:
        parts.append(neighbor_embedding)
        parts_t.append(torch.zeros_like(neighbor_embedding))
    edge_tokens, edge_tokens_t = mlp(layer.compress, torch.cat(parts, dim=1), torch.cat(parts_t, dim=1))

    central = layer.central_embedding(species).unsqueeze(1)
    tokens = per_atom_layout(central, edge_tokens, pad_index, max_neighbors, 0.0)
    tokens_t = per_atom_layout(torch.zeros_like(central), edge_tokens_t, pad_index, max_neighbors, 0.0)
    mask = attention_mask(log_fc, pad_index, n_atoms, max_neighbors)
    # the mask's tangent: log f_c's tangent in the neighbour slots, 0 for the central token and the padding
    central_t = torch.zeros(n_atoms, 1, dtype=r.dtype, device=r.device)
    mask_t = per_atom_layout(central_t, log_fc_t, pad_index, max_neighbors, 0.0)
    for block in layer.transformer:
        tokens, tokens_t = transformer_layer(cast(TransformerLayer, block), tokens, tokens_t, (mask, mask_t))

    edge_out, edge_out_t = edge_rows(tokens, pad_index), edge_rows(tokens_t, pad_index)
    central_e, central_e_t = mlp(layer.central_head, tokens[:, 0], tokens_t[:, 0])
    bond, bond_t = mlp(layer.bond_head, edge_out, edge_out_t)
    bond, bond_t = bond.squeeze(-1), bond_t.squeeze(-1)
    energies = central_e.squeeze(-1).index_add(0, local_i, bond * fc)
    energies_t = central_e_t.squeeze(-1).index_add(0, local_i, bond_t * fc + bond * fc_t)
    return (energies, energies_t), (edge_out, edge_out_t)
