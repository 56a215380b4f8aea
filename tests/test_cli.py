"""The petmd command line: eval figures, and one clear line for every kind of bad input, with nothing overwritten."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import run_petmd, small_pet, write_checkpoint, write_config, write_labelled_data
from petmd.calculator import PETCalculator
from petmd.errors import PetmdError
from petmd.export import export_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    ckpt = write_checkpoint(base / "model.ckpt", small_pet(seed=21))
    export_checkpoint(ckpt, base / "model.pt")
    return {
        "base": base,
        "ckpt": ckpt,
        "pt": base / "model.pt",
        "data": write_labelled_data(base / "data.extxyz", n_frames=4),
    }


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_every_subcommand_has_help():
    for sub in ("train", "eval", "export"):
        result = run_petmd(sub, "--help", check=True)
        assert "usage: petmd " + sub in result.stdout


@pytest.mark.parametrize("which", ["ckpt", "pt"])
def test_eval_json_figures(files, which):
    result = run_petmd("eval", files[which], files["data"], "--json", check=True)
    figures = json.loads(result.stdout)
    for key in (
        "energy_mae_mev_per_atom",
        "energy_rmse_mev_per_atom",
        "force_mae_mev_per_A",
        "force_rmse_mev_per_A",
        "n_frames",
        "by_group",
    ):
        assert key in figures
    assert figures["n_frames"] == 4
    assert set(figures["by_group"]) == {"config_type=group0", "config_type=group1"}
    assert figures["by_group"]["config_type=group0"]["n_frames"] == 2
    assert figures["energy_rmse_mev_per_atom"] >= figures["energy_mae_mev_per_atom"] > 0


def test_eval_mean_error_is_the_signed_offset(files, tmp_path):
    """E mean is model minus reference: references raised by 2 meV/atom lower it by exactly that, in every group,
    while the spread about it (what MAE and RMSE also hold) stays."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = ase.io.read(files["data"], index=":")
    for atoms in frames:
        energy, forces = atoms.get_potential_energy() + 2e-3 * len(atoms), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    ase.io.write(tmp_path / "shifted.extxyz", frames, format="extxyz")
    a, b = (
        json.loads(run_petmd("eval", files["pt"], path, "--json", check=True).stdout)
        for path in (files["data"], tmp_path / "shifted.extxyz")
    )
    for x, y in [(a, b), *((a["by_group"][g], b["by_group"][g]) for g in a["by_group"])]:
        assert y["energy_mean_error_mev_per_atom"] == pytest.approx(x["energy_mean_error_mev_per_atom"] - 2.0, abs=1e-6)
        assert y["force_mae_mev_per_A"] == x["force_mae_mev_per_A"]
    table = run_petmd("eval", files["pt"], files["data"], check=True).stdout
    assert "E mean" in table and f"{a['energy_mean_error_mev_per_atom']:+.3f}" in table


def test_eval_on_scan_frames_grouped_by_phase(files, scan_data_path, tmp_path):
    """Real data: frames of several phases; a model of the right species evaluates them, grouped."""
    indices = tmp_path / "idx.json"
    indices.write_text(json.dumps([0, 400, 700]))
    result = run_petmd("eval", files["pt"], scan_data_path, "--indices", indices, "--json", check=True)
    figures = json.loads(result.stdout)
    assert figures["n_frames"] == 3
    assert any(k.startswith("phase=") for k in figures["by_group"])
    assert np.isfinite(figures["force_mae_mev_per_A"])


def test_unknown_element_in_data(files, tmp_path):
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = Atoms("COO", positions=[[0, 0, 0], [1.16, 0, 0], [-1.16, 0, 0]])
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((3, 3)))
    path = tmp_path / "co2.extxyz"
    ase.io.write(str(path), [atoms])
    assert_one_line_error(
        run_petmd("eval", files["pt"], path), "co2.extxyz", "frame 0", "element C", "model species: H, O"
    )


def test_unknown_element_in_calculator(files):
    atoms = Atoms("OHC", positions=[[0, 0, 0], [0.96, 0, 0], [-1.5, 0, 0]])
    atoms.calc = PETCalculator(files["pt"])
    with pytest.raises(PetmdError, match="element C is not a species of the model .model species: H, O"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("label", ["energy", "forces"])
def test_frame_without_labels(files, tmp_path, label):
    path = write_labelled_data(tmp_path / "bad.extxyz", n_frames=3, missing=(1, label))
    assert_one_line_error(run_petmd("eval", files["pt"], path), "bad.extxyz", "frame 1", f"no {label}")
    cfg = write_config(tmp_path / "cfg.yaml", path)
    assert_one_line_error(run_petmd("train", cfg, "-o", tmp_path / "run"), "frame 1", f"no {label}")
    assert not (tmp_path / "run").exists()


def test_empty_missing_and_unreadable_data(files, tmp_path):
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    assert_one_line_error(run_petmd("eval", files["pt"], empty), "empty.extxyz", "empty")
    assert_one_line_error(run_petmd("eval", files["pt"], tmp_path / "nope.extxyz"), "nope.extxyz", "does not exist")
    garbage = tmp_path / "garbage.extxyz"
    garbage.write_text("this is\nnot a structure file\n")
    assert_one_line_error(run_petmd("eval", files["pt"], garbage), "garbage.extxyz", "cannot read")


def test_corrupted_and_wrong_format_checkpoints(files, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(files["ckpt"].read_bytes()[:2000])
    random_bytes = tmp_path / "random.ckpt"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(5000))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    output = tmp_path / "out.pt"
    output.write_bytes(b"previous export")
    for bad, needle in (
        (truncated, "not a readable petmd checkpoint"),
        (random_bytes, "not a readable petmd"),
        (foreign, "not a petmd checkpoint"),
    ):
        assert_one_line_error(run_petmd("export", bad, "-o", output), bad.name, needle)
        assert_one_line_error(run_petmd("eval", bad, files["data"]), bad.name, needle)
        assert output.read_bytes() == b"previous export"  # nothing overwritten
    # a TorchScript file that is not a petmd model
    other = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(other))
    assert_one_line_error(run_petmd("eval", other, files["data"]), "other.pt", "not a petmd model")
    # an exported model where a checkpoint is expected: its weights have no training record to ship
    weights = tmp_path / "weights.ckpt"
    result = run_petmd("export", files["pt"], "-o", output, "--weights-checkpoint", weights)
    assert_one_line_error(result, "exported TorchScript model, not a training checkpoint")
    assert output.read_bytes() == b"previous export" and not weights.exists()


def test_config_with_unknown_or_mistyped_key(files, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", files["data"])
    cfg.write_text(cfg.read_text().replace("learning_rate:", "learning_rte:"))
    assert_one_line_error(
        run_petmd("train", cfg, "-o", tmp_path / "run"),
        "cfg.yaml",
        "unknown config key 'training.learning_rte'",
        "learning_rate",
    )
    assert not (tmp_path / "run").exists()
    cfg2 = write_config(tmp_path / "cfg2.yaml", files["data"], epochs="many")
    assert_one_line_error(run_petmd("train", cfg2, "-o", tmp_path / "run"), "training.epochs", "int")
    cfg3 = tmp_path / "cfg3.yaml"
    cfg3.write_text("model: {d_model: 16}\noptimiser: adam\n")
    assert_one_line_error(run_petmd("train", cfg3, "-o", tmp_path / "run"), "unknown config key 'optimiser'")


def test_export_writes_a_weights_only_checkpoint(tmp_path):
    data = write_labelled_data(tmp_path / "data.extxyz", n_frames=4)
    run_petmd(
        "train",
        write_config(tmp_path / "cfg.yaml", data, epochs=1),
        "-o",
        tmp_path / "run",
        "--no-progress",
        check=True,
    )
    full = tmp_path / "run" / "last.ckpt"
    run_petmd("export", full, "-o", tmp_path / "m.pt", "--weights-checkpoint", tmp_path / "w.ckpt", check=True)
    weights = torch.load(tmp_path / "w.ckpt", weights_only=True)
    assert "optimizer_state" not in weights and "torch_rng" not in weights
    assert weights["history"] and weights["config"] == torch.load(full, weights_only=True)["config"]
    assert (tmp_path / "w.ckpt").stat().st_size < 0.6 * full.stat().st_size
    # the weights-only checkpoint gives the same model
    a = json.loads(run_petmd("eval", full, data, "--json", check=True).stdout)
    b = json.loads(run_petmd("eval", tmp_path / "w.ckpt", data, "--json", check=True).stdout)
    a.pop("model"), b.pop("model")
    assert a == b and a["force_mae_mev_per_A"] > 0


def test_an_unknown_element_symbol_is_named(tmp_path, files):
    data = tmp_path / "xx.extxyz"
    data.write_text(
        '2\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 energy=-1.0 pbc="T T T"\nO 0 0 0\nXx 1 0 0\n'
    )
    result = run_petmd("eval", files["pt"], data)
    assert_one_line_error(result, "xx.extxyz", "'Xx' is not a chemical element symbol")


def test_export_onto_a_directory_is_refused_and_leaves_nothing(tmp_path, files):
    folder = tmp_path / "models"
    folder.mkdir()
    result = run_petmd("export", files["ckpt"], "-o", folder)
    assert_one_line_error(result, "is a directory", "model.pt")
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["models"]
