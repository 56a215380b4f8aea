"""Neighbour lists (vesin) and the reverse-edge index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import water_box
from petmd.neighbors import neighbor_graph, reverse_edge_index


def brute_force_count(positions, cell, cutoff, reach=4):
    count = 0
    for shift in np.ndindex(*(2 * reach + 1,) * 3):
        s = np.array(shift) - reach
        d = positions[None, :, :] + s @ cell - positions[:, None, :]
        r = np.linalg.norm(d, axis=2)
        count += int(np.sum((r < cutoff) & (r > 0)))
    return count


def test_small_triclinic_cell_matches_brute_force():
    rng = np.random.default_rng(0)
    cell = np.array([[2.1, 0.0, 0.0], [0.7, 2.4, 0.0], [0.3, -0.4, 2.6]])
    positions = rng.random((5, 3)) @ cell
    edges, shifts = neighbor_graph(positions, cell, True, 4.0)
    assert edges.shape[1] == brute_force_count(positions, cell, 4.0)
    vectors = positions[edges[1]] - positions[edges[0]] + shifts @ cell
    assert np.linalg.norm(vectors, axis=1).max() < 4.0
    assert np.abs(shifts).max() >= 2  # several images of the same atom are distinct neighbours


def test_reverse_edges():
    box = water_box(2, seed=3, cell_tilt=0.5)
    edges, shifts = neighbor_graph(box.positions, box.cell.array, True, 4.0)
    rev = reverse_edge_index(torch.from_numpy(edges), torch.from_numpy(shifts), len(box)).numpy()
    np.testing.assert_array_equal(edges[0, rev], edges[1])
    np.testing.assert_array_equal(edges[1, rev], edges[0])
    np.testing.assert_array_equal(shifts[rev], -shifts)
    np.testing.assert_array_equal(rev[rev], np.arange(len(rev)))


def test_asymmetric_or_duplicated_edge_lists_are_rejected():
    box = water_box(2, seed=3)
    edges, shifts = neighbor_graph(box.positions, box.cell.array, True, 4.0)
    e, s = torch.from_numpy(edges), torch.from_numpy(shifts)
    with pytest.raises(RuntimeError, match="not symmetric"):
        reverse_edge_index(e[:, 1:], s[1:], len(box))
    with pytest.raises(RuntimeError, match="same edge"):
        reverse_edge_index(torch.cat([e, e[:, :1]], 1), torch.cat([s, s[:1]]), len(box))
    with pytest.raises(RuntimeError, match="outside"):
        reverse_edge_index(e, s, 3)
    self_edge = torch.tensor([[0], [0]])
    with pytest.raises(RuntimeError, match="itself"):
        reverse_edge_index(torch.cat([e, self_edge], 1), torch.cat([s, torch.zeros(1, 3, dtype=s.dtype)]), len(box))
