"""ECSE (symmetrize ecse): exact invariance, smoothness across every cutoff and switch, forces = −∇E."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import frame, rotated, small_pet, water_box
from petmd.data import find_structure
from petmd.exported import ExportedPET
from petmd.model.ecse import LocalFrames
from petmd.rotations import random_o3


def molecule(angle_deg: float = 104.5, r1: float = 0.97, r2: float = 0.97) -> Atoms:
    a = np.deg2rad(angle_deg)
    return Atoms("OH2", positions=[[0.0, 0.0, 0.0], [r1, 0.0, 0.0], [r2 * np.cos(a), r2 * np.sin(a), 0.0]])


class Evaluator:
    """ExportedPET on ASE structures (positions in, float64 results out)."""

    def __init__(self, mode: str, seed: int = 0):
        self.pet = small_pet(seed=seed)
        self.module = ExportedPET(self.pet, mode)

    def __call__(self, atoms: Atoms) -> dict:
        f = frame(atoms)
        out = self.module(
            torch.from_numpy(f.positions),
            torch.from_numpy(f.numbers),
            torch.from_numpy(f.cell),
            torch.from_numpy(f.edge_index),
            torch.from_numpy(f.cell_shifts),
            torch.ones(f.n_atoms, dtype=torch.bool),
        )
        baseline = self.pet.composition_energies[self.pet.species_index(torch.from_numpy(f.numbers))].sum()
        energy = out["energy"].detach()
        return {
            "energy": float(energy),
            "interaction": float(energy - baseline),
            "forces": out["forces"].detach().numpy(),
        }


def frames_of(atoms: Atoms):
    f = frame(atoms)
    vectors = torch.from_numpy(f.positions[f.edge_index[1]] - f.positions[f.edge_index[0]] + f.cell_shifts @ f.cell)
    atom, rotations, weights = LocalFrames(4.0)(vectors, torch.from_numpy(f.edge_index[0]), f.n_atoms)
    fallback = rotations.abs().sum((1, 2)) == 0
    per_atom_fallback = np.zeros(f.n_atoms)
    np.add.at(per_atom_fallback, atom[fallback].numpy(), weights[fallback].numpy())
    return np.bincount(atom[~fallback].numpy(), minlength=f.n_atoms), per_atom_fallback


def switches(atoms: Atoms):
    """What the discrete choices are: frames and fallback weight per atom, and edges inside R_c."""
    counts, fallback = frames_of(atoms)
    f = frame(atoms)
    distances = np.linalg.norm(
        f.positions[f.edge_index[1]] - f.positions[f.edge_index[0]] + f.cell_shifts @ f.cell, axis=1
    )
    return counts.tolist(), fallback.round(12).tolist(), int((distances < 4.0).sum())


def symmetry_errors(model: Evaluator, atoms: Atoms, n: int = 4, seed: int = 0):
    """Largest relative change of the interaction energy and of the (rotated-back) forces over n random O(3)
    elements, half of them improper."""
    torch.manual_seed(seed)
    ref = model(atoms)
    de, df = 0.0, 0.0
    for k in range(n):
        q = random_o3(torch.float64, torch.device("cpu")).numpy()
        if (np.linalg.det(q) < 0) != (k % 2 == 1):
            q = -q
        out = model(rotated(atoms, q))
        de = max(de, abs(out["interaction"] - ref["interaction"]) / abs(ref["interaction"]))
        df = max(df, np.abs(out["forces"] @ q - ref["forces"]).max() / np.abs(ref["forces"]).max())
    return de, df


@pytest.fixture(scope="module")
def ecse():
    return Evaluator("ecse")


@pytest.fixture(scope="module")
def plain():
    return Evaluator("none")


def scan_frame(path, **info):
    atoms = find_structure(path, n_atoms=192, **info)
    atoms.calc = None
    return atoms


SYSTEMS = {
    "molecule": lambda path: molecule(),
    "near-collinear": lambda path: molecule(angle_deg=161.0, r2=1.02),
    "water box": lambda path: water_box(2, cell_tilt=0.7),
    "SCAN liquid": lambda path: scan_frame(path, phase="liquid"),
    "SCAN ice": lambda path: scan_frame(path, phase="ice"),
}


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_ecse_is_invariant_to_round_off_where_the_plain_network_is_not(name, ecse, plain, scan_data_path):
    atoms = SYSTEMS[name](scan_data_path)
    de, df = symmetry_errors(ecse, atoms)
    assert de < 1e-10 and df < 1e-10, (name, de, df)
    de_plain, df_plain = symmetry_errors(plain, atoms)
    assert de_plain > 1e-6 and df_plain > 1e-4, (name, de_plain, df_plain)  # the check has something to catch


def test_frame_counts_and_the_fallback(ecse):
    counts, fallback = frames_of(molecule())
    assert counts.tolist() == [4, 4, 4] and fallback.tolist() == [0, 0, 0]  # 2 ordered pairs + their mirrors
    counts, fallback = frames_of(molecule(angle_deg=161.0, r2=1.02))
    assert 0 < fallback[0] < 1 and counts[0] > 0  # O: a weak frame mixed with the invariant fallback
    assert fallback[1] == pytest.approx(1) and fallback[2] == pytest.approx(1) and counts[1:].sum() == 0
    counts, fallback = frames_of(Atoms("OH", positions=[[0, 0, 0], [0.97, 0, 0]]))
    assert counts.sum() == 0 and fallback.tolist() == [1, 1]  # a dimer only has the fallback
    assert abs(ecse(Atoms("OH", positions=[[0, 0, 0], [0.97, 0, 0]]))["interaction"]) > 0


def test_ecse_of_an_invariant_network_is_that_network():
    """With the direction weights of every edge embedding zeroed the network sees only distances and species, so it
    is exactly invariant and its ECSE average must reproduce it: frames, weights, per-copy edges and the token
    averaging are checked as a whole."""
    invariant = Evaluator("ecse")
    with torch.no_grad():
        for layer in invariant.pet.layers:
            layer.geometry.weight[:, :3] = 0.0
    reference = ExportedPET(invariant.pet, "none")
    for atoms in (water_box(2, cell_tilt=0.7), molecule(angle_deg=161.0, r2=1.02)):
        f = frame(atoms)
        args = (
            torch.from_numpy(f.positions),
            torch.from_numpy(f.numbers),
            torch.from_numpy(f.cell),
            torch.from_numpy(f.edge_index),
            torch.from_numpy(f.cell_shifts),
            torch.ones(f.n_atoms, dtype=torch.bool),
        )
        expected, got = reference(*args), invariant.module(*args)
        for key in ("energies", "forces", "virial"):
            assert torch.allclose(got[key], expected[key], rtol=0, atol=1e-12), key


def bent(angle_deg: float) -> Atoms:
    return molecule(angle_deg=angle_deg, r2=1.02)


def two_molecules(distance: float) -> Atoms:
    second = Atoms("HOH", positions=[[distance, 0.3, 0.1], [distance + 0.9, 0.6, 0.0], [distance + 1.1, 1.5, 0.4]])
    return molecule() + second


PATHS = {
    # a third H approaching the O through its adaptive inner cutoff (~1.2 Å): the O gains frames with that H
    "inner cutoff": (lambda t: molecule() + Atoms("H", positions=[t * np.array([-0.5, -0.5, 0.7071])]), 1.25, 1.0),
    # H–O–H opened until the O's only pair is nearly collinear: frames fade out, the fallback fades in
    "collinear": (bent, 150.0, 178.0),
    # a second molecule crossing the model cutoff R_c = 4 Å (also the outer cutoff of the frames)
    "outer cutoff": (two_molecules, 3.45, 4.05),
}


@pytest.mark.parametrize("name", list(PATHS))
def test_ecse_energy_is_smooth_and_forces_are_its_gradient_across_switches(name, ecse):
    """Along a path through a switch, the energy change over each small step must equal the work of the forces
    (trapezoid rule): a smooth E leaves an error of order h³, a jump δ anywhere leaves δ (a hard inner cutoff left
    2e-5 eV here, 1000× the smooth error)."""
    atoms_at, a, b = PATHS[name]
    assert switches(atoms_at(a)) != switches(atoms_at(b))  # the path does cross a switch
    ts = np.linspace(a, b, 401)
    energies, slopes = [], []
    for t in ts:
        out = ecse(atoms_at(t))
        velocity = (atoms_at(t + 1e-6).positions - atoms_at(t - 1e-6).positions) / 2e-6
        energies.append(out["energy"])
        slopes.append(-(out["forces"] * velocity).sum())  # dE/dt = −Σ F·dx/dt
    energies, slopes = np.array(energies), np.array(slopes)
    h = ts[1] - ts[0]
    work_error = np.abs(np.diff(energies) - h * (slopes[1:] + slopes[:-1]) / 2)
    assert work_error.max() < 2e-5 * np.ptp(energies), (name, work_error.max(), np.ptp(energies))


def test_ecse_forces_equal_finite_differences_on_a_periodic_box(ecse):
    atoms = water_box(2, cell_tilt=0.5)
    forces = ecse(atoms)["forces"]
    rng = np.random.default_rng(3)
    h = 1e-5
    for index in rng.choice(len(atoms), 4, replace=False):
        for axis in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[index, axis] += h
            minus.positions[index, axis] -= h
            fd = -(ecse(plus)["energy"] - ecse(minus)["energy"]) / (2 * h)
            assert fd == pytest.approx(forces[index, axis], abs=1e-6), (index, axis)
