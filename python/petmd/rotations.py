"""Rotation quadratures and random O(3) elements in TorchScript-compatible torch, so the exported model can build
any grid at run time (pair_style pet's `symmetrize` keyword) with exactly the code petmd's Python side uses.

Product grid of degree L: ZXZ Euler angles R = Rz(α) Rx(β) Rz(γ), 2L−1 uniform α and γ, L Gauss–Legendre nodes in
cos β with their weights; (2L−1)²·L rotations averaging every Wigner-D function of degree 1 … 2L−2 to zero.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch


def gauss_legendre(n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights (summing to 2) of n-point Gauss–Legendre quadrature on [−1, 1] (Golub–Welsch)."""
    if n == 1:
        return torch.zeros(1, dtype=torch.float64), torch.full([1], 2.0, dtype=torch.float64)
    k = torch.arange(1, n, dtype=torch.float64)
    off_diagonal = k / torch.sqrt(4.0 * k * k - 1.0)
    jacobi = torch.diag(off_diagonal, 1) + torch.diag(off_diagonal, -1)
    nodes, vectors = torch.linalg.eigh(jacobi)
    return nodes, 2.0 * vectors[0] ** 2


def _rz(t: torch.Tensor) -> torch.Tensor:
    c, s, z, o = torch.cos(t), torch.sin(t), torch.zeros_like(t), torch.ones_like(t)
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)], -2)


def _rx(t: torch.Tensor) -> torch.Tensor:
    c, s, z, o = torch.cos(t), torch.sin(t), torch.zeros_like(t), torch.ones_like(t)
    return torch.stack([torch.stack([o, z, z], -1), torch.stack([z, c, -s], -1), torch.stack([z, s, c], -1)], -2)


def euler_zxz(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Rz(α) Rx(β) Rz(γ) for angle tensors of one shape, [..., 3, 3]."""
    return torch.matmul(torch.matmul(_rz(alpha), _rx(beta)), _rz(gamma))


def product_grid(degree: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(rotations [K, 3, 3], weights [K]) of the product quadrature of degree L = ``degree``, float64."""
    n_uniform = 2 * degree - 1
    uniform = 2.0 * math.pi * torch.arange(n_uniform, dtype=torch.float64) / n_uniform
    nodes, weights = gauss_legendre(degree)
    grid = torch.meshgrid([uniform, nodes, uniform], indexing="ij")
    beta_weights = torch.meshgrid([uniform, weights, uniform], indexing="ij")[1]
    rotations = euler_zxz(grid[0], torch.acos(grid[1]), grid[2]).reshape(-1, 3, 3)
    return rotations, (beta_weights / (2.0 * n_uniform * n_uniform)).reshape(-1)


def max_grid_rotations() -> int:
    """The largest grid petmd runs. Each rotation is one full evaluation of the network, every MD step or every
    frame; grids converge long before this size (docs/symmetry.md) and larger ones would run for days. (A function:
    TorchScript reads no module constants.)"""
    return 20000


def _grid_degree(name: str) -> Tuple[int, bool]:
    """(degree L, inversion) of grid ``name``; degree 0 is the identity. Raises for a name that is no grid."""
    inversion = name.endswith("i")
    body = name[:-1] if inversion else name
    if (body == "0" and not inversion) or (body == "" and inversion):
        return 0, inversion
    if body.isdigit() and not body.startswith("0"):
        if len(body) > 4:  # (2L−1)²·L would overflow; any such grid is far beyond the limit
            raise RuntimeError(
                "rotation grid '" + name + "' has more than 10^12 rotations, each a full evaluation of the network: "
                "petmd runs at most " + str(max_grid_rotations()) + "; averages converge by grid 3i to 6i"
            )
        return int(body), inversion
    raise RuntimeError("unknown rotation grid '" + name + "': use 0, i, L or Li with L >= 1 (e.g. 2, 2i, 3i)")


def _rotation_count(degree: int, inversion: bool) -> int:
    size = 1 if degree == 0 else (2 * degree - 1) * (2 * degree - 1) * degree
    return 2 * size if inversion else size


def grid_size(name: str) -> int:
    """Number of rotations in grid ``name``, without building it. Raises for a name that is no grid."""
    degree, inversion = _grid_degree(name)
    return _rotation_count(degree, inversion)


def check_grid_size(name: str, size: int) -> None:
    """Refuses a grid of more than max_grid_rotations() rotations, with its cost."""
    if size > max_grid_rotations():
        raise RuntimeError(
            "rotation grid '"
            + name
            + "' has "
            + str(size)
            + " rotations, each a full evaluation of the network (every MD step, every frame): more than the "
            + str(max_grid_rotations())
            + " petmd runs; averages converge by grid 3i to 6i (docs/symmetry.md)"
        )


def named_grid(name: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Grid by name: ``0`` (identity), ``i`` (identity and inversion), ``L`` or ``Li`` (L ≥ 1; ``i`` adds the inversion
    of every rotation). Raises for anything else and for grids beyond max_grid_rotations()."""
    degree, inversion = _grid_degree(name)
    check_grid_size(name, _rotation_count(degree, inversion))
    if degree == 0:
        rotations, weights = torch.eye(3, dtype=torch.float64).unsqueeze(0), torch.ones(1, dtype=torch.float64)
    else:
        rotations, weights = product_grid(degree)
    if inversion:
        rotations = torch.cat([rotations, -rotations])
        weights = torch.cat([weights, weights]) / 2.0
    return rotations, weights


def rotate(rows, rotations):
    """Row vectors (positions, forces: [..., n, 3]) rotated by ``rotations`` [..., 3, 3]: x → x Qᵀ, the convention of
    every rotated copy in petmd. numpy arrays and torch tensors alike (TorchScript too)."""
    return rows @ rotations.swapaxes(-1, -2)


def rotate_back(rows, rotations):
    """The inverse of ``rotate`` for orthogonal Q (x Qᵀ → x): forces and gradients of a rotated copy, back in the
    frame of the input structure."""
    return rows @ rotations


def random_o3(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One Haar-random rotation, inverted with probability ½, from torch's global generator ([3, 3])."""
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if bool(torch.linalg.det(q) < 0):
        q = -q
    if bool(torch.rand(1) < 0.5):
        q = -q
    return q.to(dtype=dtype, device=device)
