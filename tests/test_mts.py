"""Multiple time stepping: pair_style pet's correction term (symmetrized − as trained) as the slow level of LAMMPS's
own r-RESPA, the network as trained as the fast one:

    pair_style hybrid/overlay pet M pet M symmetrize grid 2i correction yes
    run_style respa 2 N hybrid 1 2
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import small_pet, water_box, write_checkpoint
from lammps_helpers import read_conservation, read_single_point, run_inprocess, run_lmp, single_point_input, write_data
from petmd.batch import frame_from_atoms
from petmd.data import find_structure
from petmd.export import export_checkpoint
from petmd.loading import load_model

TRAINED_MODEL = Path(__file__).parent / "models" / "pet-water-tiny-f64.pt"


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mts-model")
    export_checkpoint(write_checkpoint(folder / "m.ckpt", small_pet(seed=33)), folder / "m64.pt", dtype="float64")
    return folder / "m64.pt"


def mts_pair(model, mode: str = "grid 2i", extra: str = "") -> str:
    return f"""
pair_style hybrid/overlay pet {model} threads 1 {extra} pet {model} threads 1 symmetrize {mode} correction yes {extra}
pair_coeff * * pet 1 O H
pair_coeff * * pet 2 O H
"""


def system(data) -> str:
    return f"units metal\natom_style atomic\natom_modify map hash\nread_data {data}\n"


# --- the correction term -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["grid:2i", "random", "ecse"])
def test_correction_is_symmetrized_minus_plain(model64, mode):
    """Energy, per-atom energies, forces and virial of the correction = those of the mode − the plain network."""
    model = load_model(model64)
    frame = frame_from_atoms(water_box(2, seed=4, cell_tilt=0.3), 4.0)

    def evaluate(symmetrize: str, correction: bool) -> dict:
        model.module.set_correction(False)
        model.module.set_symmetrization(symmetrize)
        model.module.set_correction(correction)
        torch.manual_seed(5)  # the same random rotation in the random mode
        return {key: value.detach().numpy() for key, value in model(frame).items()}

    plain, symmetrized, correction = evaluate("none", False), evaluate(mode, False), evaluate(mode, True)
    for key in ("energy", "energies", "forces", "virial"):
        scale = np.abs(symmetrized[key]).max()
        np.testing.assert_allclose(correction[key], symmetrized[key] - plain[key], rtol=0, atol=1e-10 * scale)
    assert np.abs(correction["forces"]).max() > 1e-6  # a random-weight model is far from invariant


def test_the_correction_of_the_plain_mode_is_refused(model64):
    model = load_model(model64)
    with pytest.raises(Exception, match="would be zero: give symmetrize grid G, random or ecse"):
        model.module.set_correction(True)


def test_at_setup_the_levels_add_up_to_the_symmetrized_model(tmp_path, model64):
    """run 0 under r-RESPA: energy, forces and pressure of plain + correction = the symmetrized single point."""
    data = write_data(tmp_path / "w.data", water_box(2, seed=6, cell_tilt=0.4))
    full, mts = tmp_path / "full", tmp_path / "mts"
    full.mkdir()
    mts.mkdir()
    run_inprocess(single_point_input(model64, data, full, pair_extra="symmetrize grid 2i"))
    script = single_point_input(model64, data, mts).replace(
        f"pair_style pet {model64} threads 1 \npair_coeff * * O H\n",
        mts_pair(model64) + "run_style respa 2 4 hybrid 1 2\n",
    )
    assert "correction yes" in script
    run_inprocess(script)
    want, got = read_single_point(full), read_single_point(mts)
    assert got.energy == pytest.approx(want.energy, rel=1e-12)
    np.testing.assert_allclose(got.forces, want.forces, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.energies, want.energies, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.virial, want.virial, rtol=1e-9, atol=1e-9)


def test_compute_pet_symmetry_measures_the_plain_term(tmp_path, model64):
    """compute pet/symmetry in an MTS run measures the network as trained, as it does without MTS."""
    data = write_data(tmp_path / "w.data", water_box(2, seed=9))
    values = {}
    for name, lines in {
        "plain": f"pair_style pet {model64} threads 1\npair_coeff * * O H\n",
        "mts": mts_pair(model64) + "run_style respa 2 2 hybrid 1 2\n",
    }.items():
        run_inprocess(
            system(data)
            + lines
            + f"""compute sym all pet/symmetry 1 2
thermo_style custom step pe c_sym[1] c_sym[2] c_sym[3] c_sym[4]
run 0
print "$(c_sym[1]:%.17g) $(c_sym[2]:%.17g) $(c_sym[3]:%.17g) $(c_sym[4]:%.17g)" file {tmp_path}/{name}.txt
"""
        )
        values[name] = np.loadtxt(tmp_path / f"{name}.txt")
    assert values["plain"][1] > 0
    np.testing.assert_allclose(values["mts"], values["plain"], rtol=1e-10, atol=1e-14)


def test_outside_respa_both_terms_act_every_step(tmp_path, model64):
    """Under Verlet (and in a minimization) the pair is the symmetrized model, every step; a Verlet run is warned
    that this is the mode alone at more cost."""
    data = write_data(tmp_path / "w.data", water_box(2, seed=10))
    full, both = tmp_path / "full", tmp_path / "both"
    full.mkdir()
    both.mkdir()
    run_inprocess(single_point_input(model64, data, full, pair_extra="symmetrize grid 2i"))
    script = single_point_input(model64, data, both).replace(
        f"pair_style pet {model64} threads 1 \npair_coeff * * O H\n", mts_pair(model64) + "minimize 0 0 0 0\n"
    )
    result = run_lmp(script, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "WARNING: pair_style pet: correction yes under run_style verlet adds the correction every step" in (
        result.stdout
    )
    assert result.stdout.count("the model is already loaded by another pet sub-style on this device") == 1
    want, got = read_single_point(full), read_single_point(both)
    assert got.energy == pytest.approx(want.energy, rel=1e-12)
    np.testing.assert_allclose(got.forces, want.forces, rtol=0, atol=1e-9)


# --- trajectories ---------------------------------------------------------------------------------------------------


def trajectory(tmp_path, name, model, data, pair_lines, runner="in-process", steps=20) -> np.ndarray:
    out = tmp_path / name
    out.mkdir()
    script = (
        system(data)
        + pair_lines
        + f"""
velocity all create 300 4928459 mom yes rot yes loop geom
timestep 0.0005
fix md all nve
thermo_style custom step pe ke etotal press
thermo_modify format float %.17g
thermo 5
fix log all print 5 "$(step) $(pe:%.17g) $(etotal:%.17g) $(press:%.17g)" file {out}/thermo.txt screen no
run {steps}
write_dump all custom {out}/final.dump id x y z vx vy vz modify sort id format float %.17g
"""
    )
    if runner == "in-process":
        run_inprocess(script)
    else:
        result = run_lmp(script, out, ranks=2)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return np.loadtxt(out / "thermo.txt"), np.loadtxt(out / "final.dump", skiprows=9)


def test_one_inner_step_is_the_symmetrized_run_on_one_and_two_ranks(tmp_path, model64):
    """With n = 1 the r-RESPA trajectory is the symmetrize grid 2i trajectory, step for step; 2 ranks (with and
    without message exchange) give the same as 1, and n = 4 the same on 1 and 2 ranks."""
    data = write_data(tmp_path / "w.data", water_box(2, seed=8, cell_tilt=0.2), ids=np.arange(24) + 1)
    full = trajectory(
        tmp_path, "full", model64, data, f"pair_style pet {model64} threads 1 symmetrize grid 2i\npair_coeff * * O H\n"
    )
    runs = {
        "n1": (mts_pair(model64) + "run_style respa 2 1 hybrid 1 2\n", "in-process"),
        "n1-2ranks": (mts_pair(model64) + "run_style respa 2 1 hybrid 1 2\n", "mpiexec"),
        "n1-2ranks-no-exchange": (
            mts_pair(model64, extra="exchange no") + "run_style respa 2 1 hybrid 1 2\n",
            "mpiexec",
        ),
        "n4": (mts_pair(model64) + "run_style respa 2 4 hybrid 1 2\n", "in-process"),
        "n4-2ranks": (mts_pair(model64) + "run_style respa 2 4 hybrid 1 2\n", "mpiexec"),
    }
    got = {name: trajectory(tmp_path, name, model64, data, lines, runner) for name, (lines, runner) in runs.items()}
    for name in ("n1", "n1-2ranks", "n1-2ranks-no-exchange"):
        np.testing.assert_allclose(got[name][0], full[0], rtol=1e-11, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(got[name][1], full[1], rtol=0, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(got["n4-2ranks"][0], got["n4"][0], rtol=1e-11, atol=1e-9)
    np.testing.assert_allclose(got["n4-2ranks"][1], got["n4"][1], rtol=0, atol=1e-9)
    assert np.abs(got["n4"][1] - full[1]).max() > 1e-9  # n = 4 is another integrator


# --- mistakes -------------------------------------------------------------------------------------------------------

BAD_MTS = {
    "no plain partner": (
        lambda m, o: (
            f"pair_style pet {m} symmetrize grid 2i correction yes\npair_coeff * * O H\nrun_style respa 2 2 pair 2\n"
        ),
        "correction yes needs its plain partner",
    ),
    "two model files": (
        lambda m, o: (
            mts_pair(m).replace(f"pet {m} threads 1  pet", f"pet {o} threads 1  pet")
            + "run_style respa 2 2 hybrid 1 2\n"
        ),
        "must use one model file on one device",
    ),
    "symmetrized partner": (
        lambda m, o: (
            mts_pair(m).replace("threads 1  pet", "threads 1 symmetrize random pet")
            + "run_style respa 2 2 hybrid 1 2\n"
        ),
        "must be the network as trained, but its sub-style has symmetrize random",
    ),
    "levels reversed": (
        lambda m, o: mts_pair(m) + "run_style respa 2 2 hybrid 2 1\n",
        "the correction is computed more often than the network as trained",
    ),
    "correction of the plain mode": (
        lambda m, o: mts_pair(m, mode="none") + "run_style respa 2 2 hybrid 1 2\n",
        "would be zero",
    ),
}


@pytest.mark.parametrize("case", BAD_MTS)
def test_a_multiple_time_stepping_mistake_is_named(tmp_path, model64, case):
    make, message = BAD_MTS[case]
    other = tmp_path / "other.pt"
    export_checkpoint(write_checkpoint(tmp_path / "o.ckpt", small_pet(seed=34)), other, dtype="float64")
    data = write_data(tmp_path / "w.data", water_box(1), ids=np.arange(3) + 1)
    script = system(data) + make(model64, other) + "velocity all create 300 1\nfix md all nve\nrun 2\n"
    result = run_lmp(script, tmp_path)
    text = result.stdout + result.stderr
    assert result.returncode != 0, text[-2000:]
    assert re.search(r"ERROR.*" + message, text), text[-2000:]


# --- energy conservation ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4, 8])
def test_nve_with_the_correction_every_n_steps_conserves_energy(tmp_path, scan_data_path, n):
    """NVE of 64 liquid water molecules (a SCAN frame), inner step 0.5 fs, the correction every n steps, with the
    small trained float64 model: the r-RESPA conserved energy drifts little, and its range is bounded. The
    correction is to the inversion average (grid i: 3 copies per outer step), the cheapest whose force is real and
    smooth, so that the test fits CI."""
    atoms = find_structure(scan_data_path, n_atoms=192, config_type="multithermal")
    data = write_data(tmp_path / "water.data", atoms, ids=np.arange(len(atoms)) + 1)
    inner_steps = 160
    outer = inner_steps // n
    script = (
        system(data)
        + mts_pair(TRAINED_MODEL, mode="grid i").replace("threads 1", "threads 2")
        + f"""
run_style respa 2 {n} hybrid 1 2
velocity all create 300.0 87287 mom yes rot yes
timestep {0.0005 * n}
fix md all nve
thermo 1000
fix log all print 1 "$(time:%.10g) $(etotal:%.17g) $(temp:%.10g)" file {tmp_path}/nve.txt screen no
run {outer}
"""
    )
    run_inprocess(script)
    nve = read_conservation(tmp_path / "nve.txt", len(atoms))
    assert len(nve.time_ps) == outer + 1 and nve.time_ps[-1] == pytest.approx(inner_steps * 0.0005)
    print(f"MTS NVE 192 water, inner 0.5 fs, grid-i correction every {n} steps, 0.08 ps: {nve.summary()}")
    assert 100 < nve.temperature.mean() < 600 and abs(nve.drift) < 0.5 and nve.spread < 1.0
