"""Physical properties of the PET model: invariances, smoothness, forces, virial, batching, small cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import CUTOFF, frame, rotated, small_pet, water_box
from petmd.batch import collate, make_frame, random_rotations
from petmd.model.graph import receptive_sets


def evaluate(model, frames, virial=False):
    batch = collate(frames)
    out = model(**batch.model_inputs(), compute_virial=virial)
    return {k: v.detach() for k, v in out.items()}


@pytest.fixture(scope="module")
def model():
    return small_pet()


@pytest.fixture(scope="module")
def box():
    return water_box(n_side=2, seed=1, cell_tilt=0.4)


def test_translation_invariance(model, box):
    ref = evaluate(model, [frame(box)])
    moved = box.copy()
    moved.positions += np.array([0.37, -1.2, 5.3])  # also pushes atoms across the cell boundary
    moved.wrap()
    out = evaluate(model, [frame(moved)])
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-12, atol=0)
    torch.testing.assert_close(out["forces"], ref["forces"], rtol=0, atol=1e-10)


def test_permutation_invariance(model, box):
    ref = evaluate(model, [frame(box)])
    perm = np.random.default_rng(3).permutation(len(box))
    out = evaluate(model, [frame(box[perm])])
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-12, atol=0)
    torch.testing.assert_close(out["forces"], ref["forces"][perm], rtol=0, atol=1e-10)
    torch.testing.assert_close(out["energies"], ref["energies"][perm], rtol=0, atol=1e-10)


def test_energies_sum_to_energy(model, box):
    out = evaluate(model, [frame(box)])
    assert float(out["energies"].sum()) == pytest.approx(float(out["energy"][0]), rel=1e-14)


def test_model_is_not_exactly_rotation_invariant_but_close_in_structure(model, box):
    # PET learns invariance only approximately: a random rotation changes the energy of an untrained model
    q = random_rotations(1, np.random.default_rng(5), inversion=False)[0]
    e0 = float(evaluate(model, [frame(box)])["energy"][0])
    e1 = float(evaluate(model, [frame(rotated(box, q))])["energy"][0])
    assert e0 != e1


def test_forces_match_finite_differences(model, box):
    f0 = frame(box)
    out = evaluate(model, [f0])
    forces = out["forces"].numpy()
    h = 1e-5
    rng = np.random.default_rng(0)
    for atom in rng.choice(len(box), 4, replace=False):
        for c in range(3):
            energies = []
            for sign in (+1, -1):
                f = frame(box)
                f.positions = f0.positions.copy()
                f.positions[atom, c] += sign * h
                # same graph (no neighbour crosses R_c for so small a step): only positions move
                energies.append(float(evaluate(model, [f])["energy"][0]))
            numeric = -(energies[0] - energies[1]) / (2 * h)
            assert abs(numeric - forces[atom, c]) <= 1e-6 * max(1.0, abs(forces[atom, c])), (atom, c)


def test_virial_is_the_strain_derivative(model, box):
    """W = −∂E/∂ε for a general (non-symmetric) strain applied to positions and cell."""
    out = evaluate(model, [frame(box)], virial=True)
    virial = out["virial"][0].numpy()
    h = 1e-5
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (+1, -1):
                eps = np.eye(3)
                eps[a, b] += sign * h
                strained = box.copy()
                strained.set_cell(box.cell.array @ eps, scale_atoms=False)
                strained.positions = box.positions @ eps
                energies.append(float(evaluate(model, [frame(strained)])["energy"][0]))
            numeric = -(energies[0] - energies[1]) / (2 * h)
            assert abs(numeric - virial[a, b]) <= 1e-6 * max(1.0, np.abs(virial).max()), (a, b)


def test_energy_smooth_when_neighbour_crosses_cutoff():
    """A third atom moving out through R_c: energy and force go continuously to their values without it."""
    model = small_pet(seed=2)
    base = np.array([[0.0, 0.0, 0.0], [0.0, 0.97, 0.0]])

    def energy_force(x):
        atoms = Atoms("OHH", positions=np.vstack([base, [x, 0.0, 0.0]]))
        out = evaluate(model, [frame(atoms)])
        return float(out["energy"][0]), out["forces"][2, 0].item()

    xs = np.linspace(CUTOFF - 0.6, CUTOFF + 0.1, 141)
    data = np.array([energy_force(x) for x in xs])
    energies, forces = data[:, 0], data[:, 1]
    # beyond the cutoff of both O (at 0) and H (at ~0.97 Å off-axis) the third atom is isolated: flat energy
    far = xs > np.hypot(CUTOFF, 0) + 1e-9
    assert np.ptp(energies[far]) < 1e-12
    assert np.abs(forces[far]).max() < 1e-12
    # no jumps: successive differences are small and the force is the derivative of the energy everywhere
    assert np.abs(np.diff(energies)).max() < 0.05 * np.abs(energies - energies[-1]).max() + 1e-9
    for x, force in zip(xs[::10], forces[::10]):
        if abs(x - CUTOFF) < 1e-4:
            continue  # f_c is C¹ but not C² at R_c: a central difference across it has an O(h) error
        numeric = -(energy_force(x + 1e-6)[0] - energy_force(x - 1e-6)[0]) / 2e-6
        assert abs(numeric - force) < 1e-6 * max(1.0, np.abs(forces).max()), x
    # approaching R_c from inside: E − E_isolated ∝ δ² and F ∝ δ (f_c is quadratic at R_c), so both vanish
    deltas = 0.02 / 2.0 ** np.arange(5)
    near = np.array([energy_force(CUTOFF - d) for d in deltas])
    de = near[:, 0] - energies[-1]
    assert np.all(np.abs(de) > 0)
    np.testing.assert_allclose(de[:-1] / de[1:], 4.0, rtol=0.1)
    np.testing.assert_allclose(near[:-1, 1] / near[1:, 1], 2.0, rtol=0.1)


def test_batch_equals_one_by_one(model):
    systems = [water_box(2, seed=s) for s in range(2)] + [
        Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    ]
    frames = [frame(a) for a in systems]
    together = evaluate(model, frames, virial=True)
    offset = 0
    for k, f in enumerate(frames):
        alone = evaluate(model, [f], virial=True)
        torch.testing.assert_close(together["energy"][k], alone["energy"][0], rtol=1e-12, atol=0)
        torch.testing.assert_close(together["forces"][offset : offset + f.n_atoms], alone["forces"], rtol=0, atol=1e-10)
        torch.testing.assert_close(together["virial"][k], alone["virial"][0], rtol=0, atol=1e-9)
        offset += f.n_atoms


def test_small_cell_equals_replicated_structure(model):
    """A cell smaller than 2·R_c (atoms see several images of each other) equals the same crystal replicated."""
    small = water_box(n_side=1, spacing=3.3, seed=4, cell_tilt=0.5)  # 3.3 Å triclinic cell, R_c = 4 Å
    assert min(small.cell.lengths()) < 2 * CUTOFF
    reps = (3, 2, 2)
    big = small.repeat(reps)
    n_copies = int(np.prod(reps))
    out_small = evaluate(model, [frame(small)], virial=True)
    out_big = evaluate(model, [frame(big)], virial=True)
    torch.testing.assert_close(out_big["energy"] / n_copies, out_small["energy"], rtol=1e-12, atol=0)
    torch.testing.assert_close(out_big["forces"], out_small["forces"].repeat(n_copies, 1), rtol=0, atol=1e-9)
    torch.testing.assert_close(out_big["virial"] / n_copies, out_small["virial"], rtol=0, atol=1e-9)


def test_molecule_without_cell_and_mixed_periodicity(model):
    mol = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    out = evaluate(model, [frame(mol)])
    assert torch.isfinite(out["forces"]).all()
    # net force on an isolated molecule vanishes (translation invariance)
    assert out["forces"].sum(0).abs().max() < 1e-10
    slab = water_box(2, seed=6)
    slab.pbc = [True, True, False]
    slab.cell[2] = [0.0, 0.0, 0.0]
    out = evaluate(model, [frame(slab)])
    assert torch.isfinite(out["forces"]).all()


def test_atom_without_neighbours_gets_its_baseline_energy(model):
    atoms = Atoms("OH", positions=[[0, 0, 0], [10.0, 0, 0]])
    out = evaluate(model, [frame(atoms)])
    assert out["forces"].abs().max() == 0
    assert torch.isfinite(out["energies"]).all()


def test_edges_beyond_cutoff_are_ignored(model, box):
    """A neighbour list built with a skin (as LAMMPS's) gives the same result as the exact one."""
    exact = frame(box)
    skinned = make_frame(box.positions, box.numbers, box.cell.array, box.pbc, CUTOFF + 1.0)
    assert skinned.edge_index.shape[1] > exact.edge_index.shape[1]
    a = evaluate(model, [exact], virial=True)
    b = evaluate(model, [skinned], virial=True)
    torch.testing.assert_close(b["energy"], a["energy"], rtol=1e-13, atol=0)
    torch.testing.assert_close(b["forces"], a["forces"], rtol=0, atol=1e-11)
    torch.testing.assert_close(b["virial"], a["virial"], rtol=0, atol=1e-10)


def test_float32_model_close_to_float64(box):
    f = frame(box)
    ref = evaluate(small_pet(dtype=torch.float64), [f])
    out = evaluate(small_pet(dtype=torch.float32), [f])
    assert out["forces"].dtype == torch.float64  # accumulated in float64 whatever the network dtype
    scale = ref["forces"].abs().max()
    assert (out["forces"] - ref["forces"]).abs().max() / scale < 1e-5


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_evaluation_equals_plain(box, dtype):
    # inference in chunks with recomputation (bounded memory) gives the plain backward pass's results, with an
    # energy mask (LAMMPS ghosts) and several structures in one batch
    model = small_pet(seed=4, dtype=dtype, n_gnn_layers=3)
    other = water_box(n_side=2, seed=9)
    batch = collate([frame(box), frame(other)])
    mask = torch.from_numpy(np.random.default_rng(0).random(batch.positions.shape[0]) < 0.7)
    model.chunk_atoms = 0
    plain = {k: v.detach() for k, v in model(**batch.model_inputs(), energy_mask=mask, compute_virial=True).items()}
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    for chunk in (5, 17, batch.positions.shape[0] - 1):
        model.chunk_atoms = chunk
        out = model(**batch.model_inputs(), energy_mask=mask, compute_virial=True)
        for key in ("energy", "energies", "forces", "virial"):
            scale = float(plain[key].abs().max())
            err = float((out[key] - plain[key]).abs().max())
            assert err <= tol * scale, f"chunk {chunk}: {key} differs by {err:.3g} (scale {scale:.3g})"
        assert not out["forces"].requires_grad


def test_chunks_do_not_apply_to_training(box):
    # the training loss needs the graph of the forces: create_graph bypasses chunking
    model = small_pet(seed=4)
    model.chunk_atoms = 5
    out = model(**collate([frame(box)]).model_inputs(), create_graph=True)
    assert out["forces"].requires_grad


def test_chunked_evaluation_restricted_to_the_receptive_field():
    # LAMMPS ghosts: only a few atoms' energies are wanted; each layer runs only on the atoms those energies depend
    # on (fewer in every earlier layer), and energies, forces and virial equal the plain path's
    cluster = water_box(n_side=4, seed=5)
    cluster.pbc = False  # a 64-molecule cluster, 12.4 Å across
    model = small_pet(seed=2, n_gnn_layers=3)
    inputs = collate([frame(cluster)]).model_inputs()
    mask = torch.zeros(len(cluster), dtype=torch.bool)
    mask[:6] = True
    sets = receptive_sets(inputs["edge_index"], mask, 3)
    sizes = [int(s.sum()) for s in sets]
    assert sizes[2] == 6 and sizes[2] < sizes[1] < sizes[0] < len(cluster), sizes
    model.chunk_atoms = 0
    plain = {k: v.detach() for k, v in model(**inputs, energy_mask=mask, compute_virial=True).items()}
    model.chunk_atoms = 7
    out = model(**inputs, energy_mask=mask, compute_virial=True)
    for key in ("energy", "energies", "forces", "virial"):
        torch.testing.assert_close(out[key], plain[key], rtol=0, atol=1e-10 * float(plain[key].abs().max()))
    # positions matter one hop further (the first layer's edges); atoms beyond feel nothing
    felt = receptive_sets(inputs["edge_index"], mask, 4)[0]
    assert int(felt.sum()) < len(cluster) and float(plain["forces"][~felt].abs().max()) == 0.0


def test_chunks_with_isolated_atoms():
    # an atom without neighbours sorts first and can make a chunk without edges
    atoms = Atoms("OHHO", positions=[[0, 0, 0], [0.96, 0.1, 0], [-0.24, 0.93, 0.05], [20, 20, 20]])
    model = small_pet()
    inputs = collate([frame(atoms)]).model_inputs()
    model.chunk_atoms = 0
    plain = {k: v.detach() for k, v in model(**inputs, compute_virial=True).items()}
    for chunk in (1, 2, 3):
        model.chunk_atoms = chunk
        out = model(**inputs, compute_virial=True)
        for key in ("energy", "energies", "forces", "virial"):
            torch.testing.assert_close(out[key], plain[key], rtol=0, atol=1e-12)
