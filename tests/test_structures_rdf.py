"""Starting structures (SCAN liquid, GenIce2 ice Ih, LAMMPS data files), g(r) with block errors, and running LAMMPS
from scripts (petmd.helpers.lammps_run)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from petmd.errors import PetmdError
from petmd.helpers.lammps_run import read_thermo, run_lammps
from petmd.helpers.structures import ice_ih, liquid_water, parse_genice_exyz, write_lammps_data
from petmd.observables.lammps_dump import read_lammps_dump


def _nearest_o(atoms: Atoms) -> np.ndarray:
    """For each H, the index of its nearest O (minimum image) and the distance."""
    o = np.flatnonzero(atoms.numbers == 8)
    h = np.flatnonzero(atoms.numbers == 1)
    d = atoms.get_all_distances(mic=True)[np.ix_(h, o)]
    return o[d.argmin(axis=1)], d.min(axis=1)


@pytest.mark.parametrize("replicate,seed", [((1, 1, 1), 1), ((2, 1, 1), 2), ((2, 2, 1), 3)])
def test_genice_ice_obeys_the_ice_rules(replicate, seed):
    atoms = ice_ih(replicate, seed)
    n_mol = 16 * int(np.prod(replicate))
    assert atoms.get_chemical_symbols().count("O") == n_mol and len(atoms) == 3 * n_mol
    owner, distance = _nearest_o(atoms)
    assert distance.max() < 1.1  # every H is bonded to an O...
    assert np.all(np.bincount(owner, minlength=len(atoms))[atoms.numbers == 8] == 2)  # ...and every O has two
    density = n_mol * 18.015 * 1.66053907 / atoms.get_volume()
    assert 0.90 < density < 0.94
    o = np.flatnonzero(atoms.numbers == 8)
    d_oo = atoms.get_all_distances(mic=True)[np.ix_(o, o)]
    bonds = {frozenset(p) for p in zip(*np.nonzero((d_oo > 0.1) & (d_oo < 3.0)))}
    assert np.all(((d_oo > 0.1) & (d_oo < 3.0)).sum(axis=1) == 4)  # tetrahedral: 4 O neighbours
    # ice rules: each O–O hydrogen bond carries exactly one H, bonded to one O and pointing at the other
    h = np.flatnonzero(atoms.numbers == 1)
    d_ho = atoms.get_all_distances(mic=True)[np.ix_(h, o)]
    first, second = np.argsort(d_ho, axis=1)[:, :2].T
    carried = [frozenset((a, b)) for a, b in zip(first, second)]
    assert len(set(carried)) == len(carried) == len(bonds) and set(carried) == bonds


def test_proton_orders_differ_by_seed():
    """Same oxygen lattice (to the small shifts of GenIce's rigid molecules), different hydrogen arrangement."""
    a, b = ice_ih((2, 1, 1), 1), ice_ih((2, 1, 1), 2)

    def nearest(x, y, cell):
        d = x[:, None, :] - y[None, :, :]
        frac = np.linalg.solve(cell.T, d.reshape(-1, 3).T).T
        d = (frac - np.round(frac)) @ cell
        return np.linalg.norm(d, axis=1).reshape(len(x), len(y)).min(axis=1)

    cell = a.cell.array
    assert nearest(a.positions[a.numbers == 8], b.positions[b.numbers == 8], cell).max() < 0.2
    moved = nearest(a.positions[a.numbers == 1], b.positions[b.numbers == 1], cell) > 0.5
    assert moved.mean() > 0.2


def test_genice_output_garbage_is_an_error():
    with pytest.raises(PetmdError, match="exyz"):
        parse_genice_exyz("# nothing here\n")


def test_liquid_water_starts_are_other_frames_of_the_first_frames_density(scan_data_path):
    first, second = liquid_water(), liquid_water(start=1)
    assert np.allclose(second.cell.array, first.cell.array) and len(second) == len(first) == 192
    assert not np.allclose(second.positions, first.positions)
    assert sorted(second.get_chemical_symbols()) == sorted(first.get_chemical_symbols())
    with pytest.raises(PetmdError, match=r"liquid water start 500 does not exist; use 0-\d+"):
        liquid_water(start=500)
    with pytest.raises(PetmdError, match="liquid water start -1: give 0"):
        liquid_water(start=-1)


def test_find_structure_takes_the_first_match_and_names_what_is_missing(tmp_path):
    import ase.io

    from petmd.data import find_structure, iter_structures

    frames = [Atoms("H2O", positions=[[0, 0, 0], [0.8, 0, 0], [0, 0.8, 0]], cell=[5, 5, 5], pbc=True) for _ in range(3)]
    for k, atoms in enumerate(frames):
        atoms.info["config_type"] = "liquid" if k else "gas"
        atoms.positions += 0.1 * k
    path = tmp_path / "frames.extxyz"
    ase.io.write(path, frames)
    assert [a.info["config_type"] for a in iter_structures(path, n_atoms=3)] == ["gas", "liquid", "liquid"]
    assert find_structure(path, config_type="liquid").positions[0, 0] == pytest.approx(0.1)
    with pytest.raises(PetmdError, match="no structure in .*frames.extxyz has 4 atoms, config_type='liquid'"):
        find_structure(path, n_atoms=4, config_type="liquid")
    # the liquid starting frame says the same of a file without the SCAN set's liquid frames
    with pytest.raises(PetmdError, match="no structure in .*frames.extxyz has 192 atoms, config_type='multithermal'"):
        liquid_water(data_path=path)


def test_lammps_data_round_trip(tmp_path):
    atoms = liquid_water()
    path = write_lammps_data(atoms, tmp_path / "water.data")
    import ase.io

    back = ase.io.read(path, format="lammps-data", atom_style="atomic")
    assert len(back) == 192 and np.allclose(back.cell.lengths(), atoms.cell.lengths())
    types = back.arrays["type"]
    assert np.array_equal(types == 1, np.array(atoms.get_chemical_symbols()) == "O")
    with pytest.raises(PetmdError, match="only O and H"):
        write_lammps_data(Atoms("NaCl", [[0, 0, 0], [2, 0, 0]], cell=[5, 5, 5], pbc=True), tmp_path / "x.data")


def test_lammps_run_and_dump_and_thermo(tmp_path):
    write_lammps_data(liquid_water(), tmp_path / "water.data")
    script = tmp_path / "in.lammps"
    script.write_text("""
units metal
atom_style atomic
read_data water.data
pair_style zero 4.0
pair_coeff * *
velocity all create 300 1 mom yes
fix 1 all nve
timestep 0.0005
thermo_style custom step time temp pe ke etotal
thermo 5
dump d all custom 5 out.dump id type x y z
run ${steps}
""")
    run_lammps(script, tmp_path, {"steps": 10}, quiet=True)
    runs = read_thermo(tmp_path / "log.lammps")
    assert len(runs) == 1 and list(runs[0]["Step"]) == [0, 5, 10]
    frames = list(read_lammps_dump(tmp_path / "out.dump", ["O", "H"]))
    assert len(frames) == 3 and list(frames[0].symbols).count("O") == 64 and frames[-1].step == 10
    with pytest.raises(PetmdError, match="LAMMPS type 2 has no element"):
        list(read_lammps_dump(tmp_path / "out.dump", types=("O",)))
    script.write_text("units metal\nread_data missing.data\n")
    with pytest.raises(PetmdError, match="(?s)LAMMPS failed.*Cannot open file missing.data"):
        run_lammps(script, tmp_path, quiet=True)
