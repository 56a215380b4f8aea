"""The ASE calculator's inputs: structures a physicist would call impossible and models that are not models are
refused with a PetmdError that names the atom, the cell vector or the file."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from conftest import small_pet, water_box, write_checkpoint
from petmd.calculator import PETCalculator
from petmd.errors import PetmdError
from petmd.export import export_checkpoint


@pytest.fixture(scope="module")
def calculator(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calculator")
    export_checkpoint(write_checkpoint(folder / "m.ckpt", small_pet(seed=5)), folder / "m.pt", dtype="float64")
    return PETCalculator(str(folder / "m.pt"))


def molecule(**kwargs) -> Atoms:
    return Atoms("OHH", positions=[[0, 0, 0], [0.96, 0.1, 0], [-0.24, 0.93, 0.05]], **kwargs)


def moved(atoms: Atoms, index: int, position) -> Atoms:
    atoms.positions[index] = position
    return atoms


# name: (structure, words of the message)
BAD_STRUCTURES = {
    "two atoms on one site": (lambda: moved(molecule(), 1, [0, 0, 0]), "atoms 0 and 1 are 0 Å apart, closer than 0.1"),
    "atoms 0.05 Å apart": (lambda: moved(molecule(), 1, [0.05, 0, 0]), "atoms 0 and 1 are 0.05 Å apart"),
    "an atom on its own image": (
        lambda: moved(water_box(1), 1, water_box(1).positions[0] + [3.1, 0, 0]),
        r"atoms 0 and 1 are [0-9.e-]+ Å apart",
    ),
    "NaN position": (lambda: moved(molecule(), 2, [np.nan, 0, 0]), r"atom 2 has a non-finite position \[nan"),
    "infinite position": (lambda: moved(molecule(), 0, [0, np.inf, 0]), "atom 0 has a non-finite position"),
    "periodic without a cell": (lambda: molecule(pbc=True), "periodic along cell vector a, but that vector is zero"),
    "periodic along a zero c": (
        lambda: molecule(pbc=True, cell=[[5, 0, 0], [0, 5, 0], [0, 0, 0]]),
        "periodic along cell vector c, but that vector is zero",
    ),
    "flat cell": (
        lambda: molecule(pbc=True, cell=[[5, 0, 0], [5, 0, 0], [0, 0, 5]]),
        "the periodic cell .* has no volume",
    ),
    "NaN cell": (lambda: molecule(pbc=True, cell=[5, 5, np.nan]), "the cell has non-finite entries"),
    "element not in the model": (lambda: Atoms("ON", positions=[[0, 0, 0], [1, 0, 0]]), "element N is not a species"),
}


@pytest.mark.parametrize("case", BAD_STRUCTURES)
def test_an_impossible_structure_is_refused(calculator, case):
    make, message = BAD_STRUCTURES[case]
    atoms = make()
    atoms.calc = calculator
    with pytest.raises(PetmdError, match="^PETCalculator: " + message):
        atoms.get_forces()


def test_stress_of_a_molecule_is_not_implemented(calculator):
    atoms = molecule()
    atoms.calc = calculator
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError, match="stress needs a fully periodic cell"):
        atoms.get_stress()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.pt", None, "model file .*missing.pt does not exist"),
        ("folder", "folder", "is not a readable petmd checkpoint"),
        ("notes.txt", "not a model\n", "is not a readable petmd checkpoint"),
    ],
)
def test_a_model_that_is_not_one_is_named(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(PetmdError, match=message):
        PETCalculator(str(path))
