"""The last-layer uncertainty (petmd.uncertainty, docs/uncertainty.md): the features are exact on every path, the
calibration is stored in the exported file and found again by `petmd eval`, the ASE calculator and a re-export,
the uncertainty is invariant where it must be, and models without one say so with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import frame, rotated, run_petmd, small_pet, water_box, write_checkpoint, write_labelled_data
from lammps_helpers import run_inprocess, run_lmp, water_setup, write_data
from petmd.batch import collate
from petmd.calculator import PETCalculator
from petmd.data import split_indices
from petmd.errors import PetmdError
from petmd.export import export_checkpoint
from petmd.exported import FORMAT_VERSION
from petmd.loading import load_model, load_weights
from petmd.rotations import named_grid
from petmd.uncertainty import frame_features, quadratic_form

OLD_MODEL = Path(__file__).parent / "models" / "pet-water-tiny-f64.pt"  # format version 3, no uncertainty


def baseline(model, numbers: torch.Tensor) -> torch.Tensor:
    return model.composition_energies.index_select(0, model.species_index(numbers))


@pytest.mark.parametrize("path", ["plain", "chunked", "ecse", "masked plain", "masked chunked"])
def test_energies_are_the_features_times_the_last_layer_weights(path):
    model = small_pet(seed=3)
    batch = collate([frame(water_box(2, seed=1)), frame(water_box(2, seed=2, cell_tilt=0.3))])
    inputs = batch.model_inputs()
    n = inputs["positions"].shape[0]
    mask = torch.arange(n) % 3 == 0 if path.startswith("masked") else None
    model.chunk_atoms = 7 if path.endswith("chunked") else 0
    out = model(**inputs, energy_mask=mask, ecse=path == "ecse", compute_features=True)
    reference = out["energies"] if mask is None else torch.where(mask, out["energies"], torch.zeros(n).double())
    base = baseline(model, inputs["atomic_numbers"])
    base = base if mask is None else torch.where(mask, base, torch.zeros_like(base))
    features = out["features"]
    assert features.shape == (n, model.n_gnn_layers * model.features_per_layer)
    assert torch.allclose(features @ model.last_layer_weights() + base, reference, atol=1e-12, rtol=0)
    if mask is not None:
        assert float(features[~mask].abs().max().detach()) == 0.0
    plain = model(**inputs, energy_mask=mask, ecse=path == "ecse")
    assert torch.equal(plain["forces"], out["forces"]) and "features" not in plain


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A small model (random heads), its LJ-labelled training file, and its export with the uncertainty."""
    folder = tmp_path_factory.mktemp("uncertainty")
    data = write_labelled_data(folder / "train.xyz", n_frames=24, seed=0)
    checkpoint = write_checkpoint(folder / "m.ckpt", small_pet(seed=4))
    model = folder / "m.pt"
    result = run_petmd("export", checkpoint, "-o", model, "--dtype", "float64", "--uncertainty", "--data", data)
    assert result.returncode == 0, result.stderr
    assert "uncertainty (LLPR, 68 last-layer features" in result.stdout, result.stdout
    return {"folder": folder, "data": data, "checkpoint": checkpoint, "model": model}


def test_the_exported_uncertainty_is_the_llpr_of_the_training_features(calibrated):
    loaded = load_model(calibrated["model"])
    meta = loaded.metadata
    assert meta["format_version"] == FORMAT_VERSION and meta["uncertainty"]["method"] == "llpr"
    # the checkpoint's split (validation_fraction 0.1 of 24 frames) is what was used
    assert meta["uncertainty"]["training_frames"] + meta["uncertainty"]["validation"]["n_frames"] == 24
    weights = load_weights(calibrated["model"])
    metric = weights.uncertainty_metric.numpy()
    from petmd.data import load_frames

    frames = load_frames(calibrated["data"], 4.0, progress=False)
    features = frame_features(weights.pet.double(), frames).summed
    calc = PETCalculator(str(calibrated["model"]))
    for k in (0, 5):
        atoms = water_box(2, seed=k, jitter=0.25)
        atoms.calc = calc
        atoms.get_potential_energy()
        expected = np.sqrt(quadratic_form(metric, features[k : k + 1]))[0]
        assert calc.results["energy_uncertainty"] == pytest.approx(expected, rel=1e-7)  # M is ill-conditioned
        atom_features = weights.pet.double()(**collate([frames[k]]).model_inputs(), compute_features=True)["features"]
        expected = np.sqrt(quadratic_form(weights.extrapolation_metric.numpy(), atom_features.detach().numpy()))
        np.testing.assert_allclose(calc.results["atom_extrapolation"], expected, rtol=1e-7)
    # the α fitted on the validation frames makes their errors' rms in units of σ exactly 1, and the extrapolation
    # score of their median atom is 1
    assert meta["uncertainty"]["validation"]["rms_z"] == pytest.approx(1.0, rel=1e-9)
    validation = split_indices(len(frames), 0.1, 0)[1]
    scores = []
    for k in validation:
        atoms = water_box(2, seed=int(k), jitter=0.25)
        atoms.calc = calc
        atoms.get_potential_energy()
        scores.append(calc.results["atom_extrapolation"])
    assert np.median(np.concatenate(scores)) == pytest.approx(1.0, rel=1e-7)


def test_the_uncertainty_is_invariant_to_atom_order_and_translation(calibrated):
    calc = PETCalculator(str(calibrated["model"]))
    atoms = water_box(2, seed=7, jitter=0.25)
    atoms.calc = calc
    atoms.get_potential_energy()
    sigma, local = calc.results["energy_uncertainty"], calc.results["atom_extrapolation"].copy()
    order = np.random.default_rng(0).permutation(len(atoms))
    moved = atoms[order]
    moved.positions += [1.3, -7.9, 2.2]
    moved.calc = calc
    moved.get_potential_energy()
    assert calc.results["energy_uncertainty"] == pytest.approx(sigma, rel=1e-10)
    assert np.allclose(calc.results["atom_extrapolation"], local[order], rtol=1e-7, atol=0)  # ill-conditioned L


def test_symmetrized_modes_give_the_uncertainty_of_the_symmetrized_prediction(calibrated):
    """ECSE features are exactly invariant, so is their σ; a grid mode's σ is that of the copies' mean features."""
    atoms = water_box(2, seed=8, jitter=0.25)
    q = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    model = load_model(calibrated["model"])
    model.set_symmetrization("ecse")
    calc = PETCalculator(model)
    sigmas = []
    for structure in (atoms, rotated(atoms, q)):
        structure.calc = calc
        structure.get_potential_energy()
        sigmas.append(calc.results["energy_uncertainty"])
    assert sigmas[0] == pytest.approx(sigmas[1], rel=1e-9)

    weights = load_weights(calibrated["model"])
    rotations, grid_weights = named_grid("i")
    mean = sum(
        float(w) * frame_features(weights.pet.double(), [frame(rotated(atoms, r.numpy()))]).summed[0]
        for r, w in zip(rotations, grid_weights)
    )
    model.set_symmetrization("grid:i")
    atoms.calc = PETCalculator(model)
    atoms.get_potential_energy()
    expected = np.sqrt(quadratic_form(weights.uncertainty_metric.numpy(), mean[None]))[0]
    assert atoms.calc.results["energy_uncertainty"] == pytest.approx(expected, rel=1e-9)


def test_eval_judges_the_uncertainty_and_plots_it(calibrated, tmp_path):
    plot = tmp_path / "calibration.png"
    result = run_petmd(
        "eval", calibrated["model"], calibrated["data"], "--uncertainty", "--calibration-plot", plot, "--json"
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)["uncertainty"]
    assert figures["n_frames"] == 24 and 0 <= figures["within_1_sigma"] <= figures["within_2_sigma"] <= 1
    assert plot.stat().st_size > 10_000
    table = run_petmd("eval", calibrated["model"], calibrated["data"], "--uncertainty")
    assert "errors within 1σ" in table.stdout
    grid = run_petmd("eval", calibrated["model"], calibrated["data"], "--uncertainty", "--symmetrize", "grid:2")
    assert grid.returncode == 2 and "mode grid:2 averages rotated copies" in grid.stderr
    ecse = run_petmd("eval", calibrated["model"], calibrated["data"], "--uncertainty", "--symmetrize", "ecse", "--json")
    assert ecse.returncode == 0 and json.loads(ecse.stdout)["uncertainty"]["n_frames"] == 24


def test_re_export_keeps_the_calibration(calibrated, tmp_path):
    again = tmp_path / "again.pt"
    export_checkpoint(calibrated["model"], again, dtype="float32")
    before, after = load_weights(calibrated["model"]), load_weights(again)
    assert torch.equal(before.uncertainty_metric, after.uncertainty_metric)
    assert before.uncertainty == after.uncertainty


def test_models_without_a_calibration_load_and_say_so(calibrated, tmp_path):
    old = load_model(OLD_MODEL)  # the stored format-3 file
    assert old.metadata["format_version"] == 3 and not old.has_uncertainty
    atoms = water_box(2, seed=1)
    atoms.calc = PETCalculator(str(OLD_MODEL))
    assert np.isfinite(atoms.get_potential_energy())
    assert "energy_uncertainty" not in atoms.calc.results
    # petmd eval and petmd symmetry run it through batched, whose uncertainty argument it predates
    batched = old.batched(collate([frame(atoms)]), compute_virial=True)
    assert float(batched["energy"][0]) == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    with pytest.raises(PetmdError, match="model format version 3.* has no uncertainty calibration: export its"):
        PETCalculator(str(OLD_MODEL), uncertainty=True)
    result = run_petmd("eval", OLD_MODEL, calibrated["data"], "--uncertainty")
    assert result.returncode != 0 and "--uncertainty" in result.stderr and "petmd export" in result.stderr
    with pytest.raises(PetmdError, match="is a training checkpoint, which carries no uncertainty.*--uncertainty"):
        PETCalculator(str(calibrated["checkpoint"]), uncertainty=True)


def test_calibration_inputs_are_checked(calibrated, tmp_path):
    result = run_petmd("export", OLD_MODEL, "-o", tmp_path / "x.pt", "--uncertainty")
    assert result.returncode != 0 and "give --data TRAINING.xyz and --validation-data" in result.stderr
    result = run_petmd("export", calibrated["checkpoint"], "-o", tmp_path / "x.pt", "--data", calibrated["data"])
    assert result.returncode != 0 and "add --uncertainty" in result.stderr
    missing = tmp_path / "missing.xyz"
    result = run_petmd("export", calibrated["checkpoint"], "-o", tmp_path / "x.pt", "--uncertainty", "--data", missing)
    assert result.returncode != 0 and f"--data {missing} does not exist" in result.stderr
    assert not (tmp_path / "x.pt").exists()


# --- compute pet/uncertainty in LAMMPS ------------------------------------------------------------------------------

LAMMPS_SYSTEMS = {  # name: (structure, boundary, box of a non-periodic system)
    "water box": (lambda: water_box(2, seed=11, jitter=0.25), "p p p", None),
    "molecule": (lambda: molecule_at((-5.0, -5.0, -5.0)), "f f f", ((-10, -10, -10), (10, 10, 10))),
}


def molecule_at(center) -> Atoms:
    atoms = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0.1, 0], [-0.24, 0.93, 0.05]])
    atoms.positions += np.asarray(center)
    return atoms


def run_lammps(runner: str, script: str, folder: Path) -> str:
    if runner == "in-process":
        run_inprocess(script)
        return ""
    result = run_lmp(script, folder, ranks=2)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("name", LAMMPS_SYSTEMS)
def test_compute_pet_uncertainty_equals_the_calculator_on_1_and_2_ranks(calibrated, tmp_path, name):
    """Global (thermo) and per-atom (dump) values on 1 rank and on 2 (message exchange, and ghost atoms); the
    molecule leaves a rank without atoms."""
    make, boundary, box = LAMMPS_SYSTEMS[name]
    atoms = make()
    reference = atoms.copy()
    reference.calc = PETCalculator(str(calibrated["model"]))
    reference.get_potential_energy()
    sigma, local = reference.calc.results["energy_uncertainty"], reference.calc.results["atom_extrapolation"]
    data = write_data(tmp_path / "system.data", atoms, box=box)
    for runner, extra in (("in-process", ""), ("mpiexec -np 2", ""), ("mpiexec -np 2", "exchange no")):
        out = tmp_path / f"{runner.replace(' ', '_')}{extra.replace(' ', '_')}"
        out.mkdir()
        script = (
            water_setup(calibrated["model"], data, boundary, pair_extra=extra)
            + f"""
compute u all pet/uncertainty
thermo_style custom step pe c_u c_u[1] c_u[2] c_u[3]
run 0
print "$(c_u:%.17g) $(c_u[1]:%.17g) $(c_u[2]:%.17g) $(c_u[3]:%.17g)" file {out}/u.txt
write_dump all custom {out}/u.dump id c_u modify format float %.17g sort id
"""
        )
        stdout = run_lammps(runner, script, out)
        assert ("message exchange between ranks" in stdout) == (runner != "in-process" and not extra)
        got = np.array((out / "u.txt").read_text().split(), dtype=float)
        want = [sigma, sigma, sigma / len(atoms), local.max()]
        np.testing.assert_allclose(got, want, rtol=1e-7, err_msg=f"{runner} {extra}")
        per_atom = np.loadtxt(out / "u.dump", skiprows=9, ndmin=2)[:, 1]
        np.testing.assert_allclose(per_atom, local, rtol=1e-7, err_msg=f"{runner} {extra}")


def test_fix_halt_stops_a_run_that_leaves_the_data(calibrated, tmp_path):
    """A training structure squeezed (fix deform) out of what the model knows: fix halt on the largest extrapolation
    score stops the run at the first check whose score is over the threshold."""
    atoms = water_box(2, seed=0, jitter=0.25)  # the first training frame
    start = atoms.copy()
    start.calc = PETCalculator(str(calibrated["model"]))
    start.get_potential_energy()
    threshold = 2 * start.calc.results["atom_extrapolation"].max()
    data = write_data(tmp_path / "box.data", atoms)
    script = (
        water_setup(calibrated["model"], data)
        + f"""
compute u all pet/uncertainty
variable score_max equal c_u[3]
fix squeeze all deform 1 x scale 0.7 y scale 0.7 z scale 0.7 remap x
fix stop all halt 5 v_score_max > {threshold:.10g} error continue
thermo 5
thermo_style custom step c_u[3]
fix log all print 5 "$(step) $(c_u[3]:%.17g)" file {tmp_path}/u.txt screen no
run 400
print "$(step)" file {tmp_path}/last.txt
"""
    )
    run_inprocess(script)
    step, score_max = np.loadtxt(tmp_path / "u.txt", unpack=True, ndmin=2)
    last = int((tmp_path / "last.txt").read_text())
    assert 0 < last < 400 and score_max[step == last][0] > threshold, (last, threshold, score_max)
    assert np.all(score_max[step < last] <= threshold)


def test_compute_pet_uncertainty_refuses_a_model_without_one(tmp_path):
    data = write_data(tmp_path / "system.data", water_box(1))
    script = water_setup(OLD_MODEL, data) + "compute u all pet/uncertainty\nthermo_style custom step c_u\nrun 0\n"
    result = run_lmp(script, tmp_path)
    assert result.returncode != 0
    assert "compute pet/uncertainty:" in result.stdout and "has no uncertainty calibration" in result.stdout
    assert "--uncertainty" in result.stdout


def test_the_bridge_runs_a_format_3_file_and_says_it_has_no_uncertainty():
    from petmd import _bridge

    f = frame(water_box(2, seed=1))
    model = _bridge.Model(str(OLD_MODEL))
    args = (f.positions, f.numbers, f.cell, f.edge_index, f.cell_shifts)
    assert np.isfinite(model.compute(*args)["energy"])
    with pytest.raises(_bridge.BridgeError, match="model format version 3.* has no uncertainty calibration"):
        model.compute(*args, with_uncertainty=True)


@pytest.mark.parametrize("case", ["grid 2i", "grid 2i, 2 ranks", "ecse, 2 ranks", "grid 2i by MTS"])
def test_compute_pet_uncertainty_judges_the_symmetrized_prediction(calibrated, tmp_path, case):
    """In a symmetrized mode the compute gives the uncertainty of the symmetrized prediction, as the calculator in
    that mode does: on 1 rank, on 2 (grid: message exchange over the rotated copies; ecse: ghost atoms), and with
    multiple time stepping, where it judges the correction style's mode."""
    mode = "ecse" if case.startswith("ecse") else "grid 2i"
    atoms = water_box(2, seed=12, jitter=0.25)
    model = load_model(calibrated["model"])
    model.set_symmetrization(mode.replace(" ", ":"))
    reference = atoms.copy()
    reference.calc = PETCalculator(model)
    reference.get_potential_energy()
    data = write_data(tmp_path / "system.data", atoms)
    script = water_setup(calibrated["model"], data, pair_extra=f"symmetrize {mode}")
    if case.endswith("MTS"):
        pair = f"pair_style pet {calibrated['model']} threads 1 symmetrize {mode}\npair_coeff * * O H\n"
        plain, corrected = f"pet {calibrated['model']} threads 1", f"symmetrize {mode} correction yes"
        mts = f"""pair_style hybrid/overlay {plain} {plain} {corrected}
pair_coeff * * pet 1 O H
pair_coeff * * pet 2 O H
run_style respa 2 2 hybrid 1 2
"""
        assert pair in script
        script = script.replace(pair, mts)
    script += f"""
compute u all pet/uncertainty
thermo_style custom step pe c_u c_u[3]
run 0
print "$(c_u:%.17g) $(c_u[3]:%.17g)" file {tmp_path}/u.txt
"""
    run_lammps("mpiexec -np 2" if "2 ranks" in case else "in-process", script, tmp_path)
    got = np.array((tmp_path / "u.txt").read_text().split(), dtype=float)
    want = [reference.calc.results["energy_uncertainty"], reference.calc.results["atom_extrapolation"].max()]
    np.testing.assert_allclose(got, want, rtol=1e-7)
