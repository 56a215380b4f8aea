"""Rotation grids integrate low-degree Wigner-D functions exactly; `petmd symmetry` measures what it says."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from scipy.special import eval_legendre

from conftest import frame, run_petmd, small_pet, water_box, write_checkpoint
from petmd.batch import collate
from petmd.errors import PetmdError
from petmd.export import export_checkpoint, load_model
from petmd.symmetry import evaluate_on_grid, frame_metrics, rotation_grid


def unit_vectors(n, seed):
    v = np.random.default_rng(seed).standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("name,size", [("0", 1), ("i", 2), ("1", 1), ("2", 18), ("2i", 36), ("3", 75),
                                       ("3i", 150), ("4", 196), ("4i", 392), ("random:7", 7)])
def test_grid_sizes_weights_and_orthogonality(name, size):
    grid = rotation_grid(name)
    assert grid.size == size and grid.matrices.shape == (size, 3, 3)
    assert grid.weights.sum() == pytest.approx(1.0, abs=1e-14) and np.all(grid.weights > 0)
    q = grid.matrices
    assert np.abs(q @ q.transpose(0, 2, 1) - np.eye(3)).max() < 1e-13
    dets = np.linalg.det(q)
    if name.endswith("i") and not name.startswith("random"):
        assert np.sum(dets < 0) == size // 2  # every rotation also inverted
    elif not name.startswith("random"):
        assert np.all(dets > 0)


@pytest.mark.parametrize("degree", [2, 3, 4, 5])
def test_product_grid_integrates_wigner_d_exactly_up_to_its_degree(degree):
    """P_l(u·Rv) is a combination of Wigner-D functions of degree l: its average over SO(3) is zero for l ≥ 1. The
    (2L−1)²·L grid reproduces that for l ≤ 2L−2 and no further."""
    grid = rotation_grid(str(degree))
    u, v = unit_vectors(6, seed=degree), unit_vectors(6, seed=100 + degree)
    cosines = np.einsum("pa,kab,pb->pk", u, grid.matrices, v)  # [pairs, K]

    def grid_average(l):
        return np.abs(eval_legendre(l, cosines) @ grid.weights).max()

    for l in range(1, 2 * degree - 1):
        assert grid_average(l) < 1e-12, l
    assert max(grid_average(2 * degree - 1), grid_average(2 * degree)) > 1e-4  # the degree is tight


def test_inversion_grids_also_cancel_odd_degrees():
    grid = rotation_grid("2i")
    u, v = unit_vectors(4, 1), unit_vectors(4, 2)
    cosines = np.einsum("pa,kab,pb->pk", u, grid.matrices, v)
    for l in (1, 3, 5, 7, 9):
        assert np.abs(eval_legendre(l, cosines) @ grid.weights).max() < 1e-12


@pytest.mark.parametrize("bad", ["", "x", "0i", "-2", "2j", "random:", "random:0", "random:abc", "2.5"])
def test_unknown_grid_names_are_errors(bad):
    with pytest.raises(PetmdError, match="grid"):
        rotation_grid(bad)


def test_grid_evaluation_matches_one_call_per_rotation(tmp_path):
    ckpt = write_checkpoint(tmp_path / "m.ckpt", small_pet(seed=4))
    export_checkpoint(ckpt, tmp_path / "m.pt", dtype="float64")
    model = load_model(tmp_path / "m.pt")
    f = frame(water_box(2, seed=3, cell_tilt=0.4))
    grid = rotation_grid("2i")
    ev = evaluate_on_grid(model, f, grid, atoms_per_batch=5 * f.n_atoms)  # several model calls
    for k in (0, 7, 20, 35):
        q = grid.matrices[k]
        out = model.batched(collate([f], rotations=q[None]))
        assert ev.energies[k] == pytest.approx(float(out["energy"][0].detach()), abs=1e-10)
        np.testing.assert_allclose(ev.forces[k], out["forces"].detach().numpy() @ q, atol=1e-10)
    plain = model(f)
    assert ev.plain_energy == pytest.approx(float(plain["energy"].detach()), abs=1e-10)
    m = frame_metrics(ev, f.n_atoms)
    assert m["energy_deviation"] == pytest.approx(ev.plain_energy - grid.weights @ ev.energies, abs=1e-12)
    # a random-weight model is far from invariant, but rotating back must still leave forces of the same size
    assert 0 < m["force_mae"] < np.abs(ev.plain_forces).mean()


def test_symmetry_cli(tmp_path):
    ckpt = write_checkpoint(tmp_path / "m.ckpt", small_pet(seed=8))
    export_checkpoint(ckpt, tmp_path / "m.pt", dtype="float64")
    structures = []
    for k in range(3):
        atoms = water_box(2, seed=k)
        atoms.info["config_type"] = "liquid" if k else "other"
        structures.append(atoms)
    ase.io.write(tmp_path / "frames.xyz", structures, format="extxyz")  # no energies or forces: not needed
    result = run_petmd("symmetry", tmp_path / "m.pt", tmp_path / "frames.xyz", "--grid", "2", "--json",
                       "-o", tmp_path / "report", check=True)
    figures = json.loads(result.stdout)
    for key in ("grid", "energy_mae_mev_per_structure", "energy_mae_mev_per_atom", "force_mae_mev_per_A",
                "force_max_mev_per_A", "energy_std_mev_per_atom"):
        assert key in figures
    assert figures["grid"] == "2" and figures["grid_size"] == 18 and figures["n_frames"] == 3
    assert figures["by_group"]["config_type=liquid"]["n_frames"] == 2
    assert figures["energy_mae_mev_per_atom"] * 24 == pytest.approx(figures["energy_mae_mev_per_structure"])
    for name in ("symmetry.json", "frames.csv", "symmetry-histogram.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    table = run_petmd("symmetry", tmp_path / "m.pt", tmp_path / "frames.xyz", "--grid", "i", "--max-frames", "1",
                      check=True).stdout
    assert "plain vs grid i (2 elements)" in table
    bad = run_petmd("symmetry", tmp_path / "m.pt", tmp_path / "frames.xyz", "--grid", "3x")
    assert bad.returncode == 2 and "unknown rotation grid '3x'" in bad.stderr
