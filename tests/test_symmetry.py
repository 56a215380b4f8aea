"""Rotation grids integrate low-degree Wigner-D functions exactly; `petmd symmetry` measures what it says."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from scipy.special import eval_legendre

from conftest import frame, rotated, run_petmd, small_pet, water_box, write_checkpoint
from petmd.batch import collate
from petmd.errors import PetmdError
from petmd.export import export_checkpoint
from petmd.loading import load_model
from petmd.rotations import grid_size, max_grid_rotations
from petmd.symmetry import _check_cost, evaluate_on_grid, frame_metrics, rotation_grid


def unit_vectors(n, seed):
    v = np.random.default_rng(seed).standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "name,size",
    [
        ("0", 1),
        ("i", 2),
        ("1", 1),
        ("2", 18),
        ("2i", 36),
        ("3", 75),
        ("3i", 150),
        ("4", 196),
        ("4i", 392),
        ("random:7", 7),
    ],
)
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


def test_gauss_legendre_matches_scipy():
    from scipy.special import roots_legendre

    from petmd.rotations import gauss_legendre

    for n in (1, 2, 3, 5, 8, 12):
        nodes, weights = gauss_legendre(n)
        want_nodes, want_weights = roots_legendre(n)
        np.testing.assert_allclose(nodes.numpy(), want_nodes, atol=1e-14)
        np.testing.assert_allclose(weights.numpy(), want_weights, atol=1e-14)


@pytest.mark.parametrize("degree", [2, 3, 4, 5])
def test_product_grid_integrates_wigner_d_exactly_up_to_its_degree(degree):
    """P_l(u·Rv) is a combination of Wigner-D functions of degree l: its average over SO(3) is zero for l ≥ 1. The
    (2L−1)²·L grid reproduces that for l ≤ 2L−2 and no further."""
    grid = rotation_grid(str(degree))
    u, v = unit_vectors(6, seed=degree), unit_vectors(6, seed=100 + degree)
    cosines = np.einsum("pa,kab,pb->pk", u, grid.matrices, v)  # [pairs, K]

    def grid_average(degree_l):
        return np.abs(eval_legendre(degree_l, cosines) @ grid.weights).max()

    for degree_l in range(1, 2 * degree - 1):
        assert grid_average(degree_l) < 1e-12, degree_l
    assert max(grid_average(2 * degree - 1), grid_average(2 * degree)) > 1e-4  # the degree is tight


def test_inversion_grids_also_cancel_odd_degrees():
    grid = rotation_grid("2i")
    u, v = unit_vectors(4, 1), unit_vectors(4, 2)
    cosines = np.einsum("pa,kab,pb->pk", u, grid.matrices, v)
    for degree_l in (1, 3, 5, 7, 9):
        assert np.abs(eval_legendre(degree_l, cosines) @ grid.weights).max() < 1e-12


@pytest.mark.parametrize("bad", ["", "x", "0i", "-2", "2j", "random:", "random:0", "random:abc", "2.5", "i2", "02"])
def test_unknown_grid_names_are_errors(bad):
    with pytest.raises(PetmdError, match="grid"):
        rotation_grid(bad)


@pytest.mark.parametrize(
    "name, size", [("0", 1), ("i", 2), ("1", 1), ("2", 18), ("3i", 150), ("17", 18513), ("99", 3842091)]
)
def test_grid_size_is_known_before_the_grid_is_built(name, size):
    assert grid_size(name) == size
    if size <= max_grid_rotations():
        assert rotation_grid(name).size == size


@pytest.mark.parametrize("name", ["99", "18", "14i", "99999999999", "random:20001"])
def test_grids_beyond_the_limit_are_refused_with_their_cost(name):
    with pytest.raises(PetmdError, match=r"rotation grid '.*' has .* rotations, each a full evaluation"):
        rotation_grid(name)


def test_a_grid_whose_forces_cannot_fit_in_memory_is_refused():
    with pytest.raises(PetmdError, match=r"grid 3i: the forces of its 150 rotated copies .* GiB, more than half"):
        _check_cost(rotation_grid("3i"), [100, 10**8], progress=False)


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
    result = run_petmd(
        "symmetry",
        tmp_path / "m.pt",
        tmp_path / "frames.xyz",
        "--grid",
        "2",
        "--json",
        "-o",
        tmp_path / "report",
        check=True,
    )
    figures = json.loads(result.stdout)
    for key in (
        "grid",
        "energy_mae_mev_per_structure",
        "energy_mae_mev_per_atom",
        "force_mae_mev_per_A",
        "force_max_mev_per_A",
        "energy_std_mev_per_atom",
    ):
        assert key in figures
    assert figures["grid"] == "2" and figures["grid_size"] == 18 and figures["n_frames"] == 3
    assert figures["by_group"]["config_type=liquid"]["n_frames"] == 2
    assert figures["energy_mae_mev_per_atom"] * 24 == pytest.approx(figures["energy_mae_mev_per_structure"])
    for name in ("symmetry.json", "frames.csv", "symmetry-histogram.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    table = run_petmd(
        "symmetry", tmp_path / "m.pt", tmp_path / "frames.xyz", "--grid", "i", "--max-frames", "1", check=True
    ).stdout
    assert "(mode none)" in table and "model vs grid i (2 elements)" in table
    bad = run_petmd("symmetry", tmp_path / "m.pt", tmp_path / "frames.xyz", "--grid", "3x")
    assert bad.returncode == 2 and "unknown rotation grid '3x'" in bad.stderr


# --- symmetrized exported models ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pet_checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("sym") / "m.ckpt", small_pet(seed=12))


def export_and_load(checkpoint, path, **options):
    export_checkpoint(checkpoint, path, dtype="float64", **options)
    return load_model(path)


def invariance_error(model, atoms, n=4):
    """Largest change of the energy (eV) and of the back-rotated forces (eV/Å) under random O(3) elements."""
    from petmd.batch import random_rotations

    ref = model(frame(atoms))
    e0, f0 = float(ref["energy"].detach()), ref["forces"].detach().numpy()
    de = df = 0.0
    for q in random_rotations(n, np.random.default_rng(5)):
        out = model(frame(rotated(atoms, q)))
        de = max(de, abs(float(out["energy"].detach()) - e0))
        df = max(df, float(np.abs(out["forces"].detach().numpy() @ q - f0).max()))
    return de, df


def test_grid_export_equals_the_python_grid_average(tmp_path, pet_checkpoint):
    atoms = water_box(2, seed=6, cell_tilt=0.5)
    meta = export_checkpoint(pet_checkpoint, tmp_path / "g.pt", dtype="float64", symmetrize="grid:2i")
    assert meta["symmetrize"] == "grid:2i"
    exported = load_model(tmp_path / "g.pt")
    out = exported(frame(atoms))
    plain = export_and_load(pet_checkpoint, tmp_path / "p.pt")
    ev = evaluate_on_grid(plain, frame(atoms), rotation_grid("2i"))
    assert float(out["energy"].detach()) == pytest.approx(ev.mean_energy, abs=1e-10)
    np.testing.assert_allclose(out["forces"].numpy(), ev.mean_forces, atol=1e-10)
    # per-atom energies sum to the energy; the virial is the strain derivative of the averaged energy
    assert float(out["energies"].detach().sum()) == pytest.approx(ev.mean_energy, abs=1e-9)
    eps = 1e-6
    strained = []
    for sign in (1, -1):
        deform = np.eye(3)
        deform[0, 1] += sign * eps
        a = atoms.copy()
        a.set_cell(atoms.cell.array @ deform, scale_atoms=True)
        strained.append(float(exported(frame(a))["energy"].detach()))
    assert -(strained[0] - strained[1]) / (2 * eps) == pytest.approx(float(out["virial"].detach()[0, 1]), rel=1e-6)
    # switching the mode of a loaded file at run time gives what exporting with that mode gives
    plain.module.set_symmetrization("grid:2i")
    assert float(plain(frame(atoms))["energy"].detach()) == pytest.approx(ev.mean_energy, abs=1e-10)


def test_grid_averaging_removes_the_symmetry_error(tmp_path, pet_checkpoint):
    atoms = water_box(2, seed=2)
    model = export_and_load(pet_checkpoint, tmp_path / "m.pt")
    errors = {}
    for mode in ("none", "grid:2", "grid:3i", "grid:5i"):
        model.module.set_symmetrization(mode)
        errors[mode] = invariance_error(model, atoms)
    assert errors["none"][0] > 10 * errors["grid:5i"][0] and errors["none"][1] > 10 * errors["grid:5i"][1]
    assert errors["grid:2"][0] > errors["grid:5i"][0]


def test_random_mode_is_the_plain_model_on_a_randomly_rotated_system(tmp_path, pet_checkpoint):
    import torch

    from petmd.rotations import random_o3

    atoms = water_box(2, seed=1)
    model = export_and_load(pet_checkpoint, tmp_path / "r.pt", symmetrize="random")
    torch.manual_seed(123)
    first = model(frame(atoms))
    torch.manual_seed(123)
    q = random_o3(torch.float64, torch.device("cpu")).numpy()
    torch.manual_seed(123)
    again = model(frame(atoms))
    assert float(first["energy"].detach()) == float(again["energy"].detach())  # seeded: reproducible
    model.module.set_symmetrization("none")
    ref = model(frame(rotated(atoms, q)))
    assert float(first["energy"].detach()) == pytest.approx(float(ref["energy"].detach()), abs=1e-10)
    np.testing.assert_allclose(first["forces"].numpy(), ref["forces"].numpy() @ q, atol=1e-10)


def test_unknown_symmetrization_is_an_error(tmp_path, pet_checkpoint):
    for bad in ("grid:3x", "grid", "average", "grid:"):
        result = run_petmd("export", pet_checkpoint, "-o", tmp_path / "x.pt", "--symmetrize", bad)
        assert result.returncode == 2 and "symmetriz" in result.stderr, (bad, result.stderr)


def test_symmetry_of_a_symmetrized_model_is_measured_in_its_mode(tmp_path, pet_checkpoint):
    """petmd symmetry evaluates a grid-averaged model as such: its error against a finer grid is far smaller than
    the plain network's; --symmetrize overrides the stored mode."""
    from petmd.symmetry import symmetry_error

    atoms = water_box(1, seed=3)
    ase.io.write(tmp_path / "one.xyz", atoms, format="extxyz")
    export_checkpoint(pet_checkpoint, tmp_path / "g.pt", dtype="float64", symmetrize="grid:3i")
    averaged = symmetry_error(tmp_path / "g.pt", tmp_path / "one.xyz", grid="4i", progress=False)
    plain = symmetry_error(tmp_path / "g.pt", tmp_path / "one.xyz", grid="4i", progress=False, symmetrize="none")
    assert averaged["symmetrize"] == "grid:3i" and plain["symmetrize"] == "none"
    assert averaged["force_mae_mev_per_A"] < 0.1 * plain["force_mae_mev_per_A"]
    assert averaged["energy_mae_mev_per_atom"] < 0.1 * plain["energy_mae_mev_per_atom"]
    with pytest.raises(PetmdError, match="unknown symmetrization 'sideways'"):
        symmetry_error(tmp_path / "g.pt", tmp_path / "one.xyz", grid="2", progress=False, symmetrize="sideways")


def test_ecse_export_and_its_measured_symmetry_error(tmp_path, pet_checkpoint):
    """`petmd export --symmetrize ecse` writes an ECSE model: `petmd symmetry` finds it invariant to round-off
    against grid 4i where the plain network is not, and `petmd eval` (batched evaluation) evaluates it with ECSE."""
    from petmd.evaluate import evaluate
    from petmd.symmetry import symmetry_error

    atoms = water_box(1, seed=3)
    atoms.calc = SinglePointCalculator(atoms, energy=-470.0, forces=np.zeros((len(atoms), 3)))
    ase.io.write(tmp_path / "one.xyz", atoms, format="extxyz")
    result = run_petmd(
        "export", pet_checkpoint, "-o", tmp_path / "e.pt", "--dtype", "float64", "--symmetrize", "ecse", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["symmetrize"] == "ecse"
    exact = symmetry_error(tmp_path / "e.pt", tmp_path / "one.xyz", grid="4i", progress=False)
    plain = symmetry_error(tmp_path / "e.pt", tmp_path / "one.xyz", grid="4i", progress=False, symmetrize="none")
    assert exact["symmetrize"] == "ecse" and plain["force_mae_mev_per_A"] > 1e-3
    assert exact["force_max_mev_per_A"] < 1e-8 and exact["energy_mae_mev_per_atom"] < 1e-8
    model = load_model(tmp_path / "e.pt")
    direct = float(model(frame(atoms))["energy"].detach())
    batched = evaluate(tmp_path / "e.pt", tmp_path / "one.xyz", progress=False)
    assert batched["energy_mae_mev_per_atom"] == pytest.approx(abs(direct + 470.0) / len(atoms) * 1e3, rel=1e-9)
