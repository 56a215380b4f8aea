"""Stress and virial labels: their sign and units against ASE, the stress term's gradient (chunked and plain, and
against finite differences), mixed data, `petmd eval`'s stress errors, and training that fits stresses."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import frame, run_petmd, small_pet, water_box, write_config
from petmd.batch import collate, frame_from_atoms, random_rotations
from petmd.calculator import PETCalculator
from petmd.data import load_frames, virial_label
from petmd.errors import PetmdError
from petmd.objective import training_loss
from test_training_gradient import assert_same_gradients, gradients

LJ = dict(sigma=2.0, epsilon=0.05, rc=4.0, smooth=True)


def lj_box(seed: int, n: int = 16, length: float = 6.2) -> Atoms:
    """A periodic box of n argon-like atoms at least 1.9 Å apart, its cell strained at random (stresses vary)."""
    rng = np.random.default_rng(seed)
    strain = np.eye(3) + rng.normal(0, 0.04, (3, 3))
    cell = length * strain
    positions: list = []
    while len(positions) < n:
        trial = rng.random(3) @ cell
        atoms = Atoms("Ar" * (len(positions) + 1), positions=positions + [trial], cell=cell, pbc=True)
        if len(positions) == 0 or atoms.get_distances(-1, range(len(positions)), mic=True).min() > 1.9:
            positions.append(trial)
    return Atoms("Ar" * n, positions=positions, cell=cell, pbc=True)


def labelled_lj(path, n_frames: int, with_stress=lambda k: True):
    frames = []
    for k in range(n_frames):
        atoms = lj_box(k)
        atoms.calc = LennardJones(**LJ)
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        results = dict(energy=energy, forces=forces) | ({"stress": stress} if with_stress(k) else {})
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    ase.io.write(str(path), frames, format="extxyz")
    return path


def test_virial_label_is_minus_the_strain_derivative_of_the_energy():
    """W = −V σ with ASE's σ = (1/V) ∂E/∂ε: compared with a central difference of the LJ energy under strain."""
    atoms = lj_box(3)
    atoms.calc = LennardJones(**LJ)
    atoms.calc.results = {"stress": atoms.get_stress()}
    w = virial_label(atoms, "stress", "virial")
    h, numerical = 1e-5, np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                strained = atoms.copy()
                strained.calc = LennardJones(**LJ)
                deformation = np.eye(3)
                deformation[a, b] += sign * h
                strained.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
                energies.append(strained.get_potential_energy())
            numerical[a, b] = -(energies[0] - energies[1]) / (2 * h)
    np.testing.assert_allclose(w, 0.5 * (numerical + numerical.T), atol=1e-7)
    # the same label given as a virial (Voigt or 3×3) is read as it is
    atoms.info["virial"] = w.ravel()
    np.testing.assert_array_equal(virial_label(atoms, "stress", "virial"), w)


def test_virial_labels_rotate_with_the_structure():
    atoms = lj_box(5)
    atoms.calc = LennardJones(**LJ)
    w = -atoms.get_volume() * atoms.get_stress(voigt=False)
    q = random_rotations(1, np.random.default_rng(2))[0]
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ q.T
    rotated.cell = atoms.cell.array @ q.T
    rotated.calc = LennardJones(**LJ)
    expected = -rotated.get_volume() * rotated.get_stress(voigt=False)
    batch = collate([frame_from_atoms(atoms, 4.0, 0.0, np.zeros((16, 3)), virial=w)], rotations=q[None])
    np.testing.assert_allclose(batch.virial[0].numpy(), expected, atol=1e-9)


def stress_batch():
    """Two periodic water boxes (one triclinic) and a third without a stress label."""
    frames = [frame(water_box(n_side=2, seed=1, cell_tilt=0.4)), frame(water_box(n_side=2, seed=9)), frame(water_box())]
    rng = np.random.default_rng(0)
    frames[0].virial, frames[1].virial = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    batch = collate(frames)
    batch.energy = torch.from_numpy(rng.normal(size=3))
    batch.forces = torch.from_numpy(rng.normal(size=(batch.positions.shape[0], 3)))
    return batch


def test_stress_term_gradient_chunked_plain_and_finite_differences():
    model = small_pet(seed=4, n_gnn_layers=3)
    batch = stress_batch()
    assert batch.has_virial.tolist() == [True, True, False]

    def loss_fn(out):
        return training_loss(out, batch, 0.7, 0.5, 1.0, stress_weight=30.0)[0]

    def stress_only(out):
        return training_loss(out, batch, 0.7, 0.0, 0.0, stress_weight=1.0)[0]

    inputs = batch.model_inputs()
    loss_ref, _, ref = gradients(model, inputs, loss_fn, 0, compute_virial=True)
    for chunk in (7, 40):
        loss, _, got = gradients(model, inputs, loss_fn, chunk, compute_virial=True)
        assert float(loss) == pytest.approx(float(loss_ref), rel=1e-10)
        assert_same_gradients(got, ref, 1e-10)
    _, _, grad = gradients(model, inputs, stress_only, 11, compute_virial=True)
    assert max(float(g.abs().max()) for g in grad.values()) > 0
    largest = sorted(grad, key=lambda name: -float(grad[name].abs().max()))[:3]
    for name in largest:
        parameter = dict(model.named_parameters())[name]
        index = tuple(int(i) for i in torch.nonzero(grad[name].abs() == grad[name].abs().max())[0])
        h, values = 1e-6, []
        for sign in (1, -1):
            with torch.no_grad():
                parameter[index] += sign * h
            out = model(**inputs, compute_forces=True, compute_virial=True)
            values.append(float(stress_only(out).detach()))
            with torch.no_grad():
                parameter[index] -= sign * h
        assert (values[0] - values[1]) / (2 * h) == pytest.approx(float(grad[name][index]), rel=1e-5)


def test_stress_labels_are_read_refused_and_mixed(tmp_path):
    path = labelled_lj(tmp_path / "lj.xyz", 4, with_stress=lambda k: k % 2 == 0)
    frames = load_frames(path, 4.0, progress=False)
    assert [f.virial is not None for f in frames] == [True, False, True, False]
    molecule = Atoms("ArAr", positions=[[0, 0, 0], [2.5, 0, 0]])
    molecule.calc = SinglePointCalculator(molecule, energy=0.0, forces=np.zeros((2, 3)), stress=np.zeros(6))
    ase.io.write(tmp_path / "gas.xyz", [molecule], format="extxyz")
    with pytest.raises(PetmdError, match=r"gas.xyz: frame 0: 'stress' needs a cell periodic in x, y and z"):
        load_frames(tmp_path / "gas.xyz", 4.0, progress=False)
    atoms = lj_box(1)
    atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((16, 3)))
    atoms.info["w"] = [1.0, 2.0, 3.0, 4.0]
    ase.io.write(tmp_path / "bad.xyz", [atoms], format="extxyz")
    with pytest.raises(PetmdError, match=r"frame 0: 'w' has 4 numbers; expected 9 \(3×3\) or 6"):
        load_frames(tmp_path / "bad.xyz", 4.0, progress=False, virial_key="w")
    no_labels = labelled_lj(tmp_path / "none.xyz", 4, with_stress=lambda k: False)
    config = write_config(tmp_path / "cfg.yaml", no_labels, stress_weight=1.0)
    result = run_petmd("train", config, "-o", tmp_path / "run", "--no-progress")
    assert result.returncode == 2 and "no frame of" in result.stderr and "set data.stress_key" in result.stderr


@pytest.mark.slow
def test_training_with_a_stress_weight_fits_stresses(tmp_path):
    """The same 72 steps with and without the stress term: the validation stress error of the run with it is lower
    (the frames' stresses are those of the LJ potential that labels them); `petmd eval` reports it in GPa."""
    data = labelled_lj(tmp_path / "lj.xyz", 24, with_stress=lambda k: k % 4 != 3)  # a quarter without stress
    errors = {}
    for weight in (0.0, 10.0):
        settings = dict(epochs=12, atoms_per_batch=48, stress_weight=weight, learning_rate=3e-3)
        config = write_config(tmp_path / f"cfg{weight}.yaml", data, **settings)
        run = tmp_path / f"run{weight}"
        trained = run_petmd("train", config, "-o", run, "--no-progress", check=True)
        assert "val S MAE" in trained.stdout and "GPa" in trained.stdout  # the summary shows the stress errors
        metrics = (run / "metrics.csv").read_text().splitlines()
        assert "val_stress_mae_gpa" in metrics[0]
        result = run_petmd("eval", run / "last.ckpt", data, "--indices", run / "split.json", "--json", check=True)
        figures = json.loads(result.stdout)
        validation = json.loads((run / "split.json").read_text())["validation"]
        assert figures["n_stress_frames"] == sum(k % 4 != 3 for k in validation)
        errors[weight] = figures["stress_mae_gpa"]
    assert errors[10.0] < 0.7 * errors[0.0], errors
    # the ASE calculator's stress is the trained one: its errors on the validation frames are eval's
    calculator = PETCalculator(str(tmp_path / "run10.0" / "last.ckpt"))
    structures = ase.io.read(data, index=":")
    residuals = []
    for k in validation:
        if k % 4 != 3:
            atoms = structures[k].copy()
            reference = structures[k].get_stress()
            atoms.calc = calculator
            residuals.append(atoms.get_stress() - reference)
    voigt = np.abs(np.array(residuals))
    full_mae = (voigt[:, :3].sum() + 2 * voigt[:, 3:].sum()) / (9 * len(residuals))  # eval counts all 9 components
    assert 160.21766208 * full_mae == pytest.approx(errors[10.0], rel=1e-6)
