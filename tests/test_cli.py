"""The petmd command line: eval figures, and one clear line for every kind of bad input, with nothing overwritten."""

from __future__ import annotations

import argparse
import json
import re

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


@pytest.mark.parametrize("mode", ["ecse", "grid:2"])
def test_eval_symmetrized_is_the_calculator_in_that_mode(files, mode):
    """--symmetrize: the errors of the potential that MD in that mode runs on, the same numbers as the ASE
    calculator of the model switched to it (ecse through the batched call, grids one structure per call)."""
    import ase.io

    from petmd.loading import load_model

    result = run_petmd("eval", files["pt"], files["data"], "--symmetrize", mode, "--json", check=True)
    figures = json.loads(result.stdout)
    model = load_model(files["pt"])
    model.set_symmetrization(mode)
    calculator = PETCalculator(model)
    e_err, f_err = [], []
    for atoms in ase.io.read(files["data"], index=":"):
        reference_energy, reference_forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = calculator
        e_err.append(abs(atoms.get_potential_energy() - reference_energy) / len(atoms))
        f_err.append(np.abs(atoms.get_forces() - reference_forces))
    assert figures["symmetrize"] == mode
    assert figures["energy_mae_mev_per_atom"] == pytest.approx(1e3 * np.mean(e_err), rel=1e-5)
    assert figures["force_mae_mev_per_A"] == pytest.approx(1e3 * np.mean(np.concatenate(f_err)), rel=1e-5)
    plain = json.loads(run_petmd("eval", files["pt"], files["data"], "--json", check=True).stdout)
    assert plain["symmetrize"] == "none" and plain["force_mae_mev_per_A"] != figures["force_mae_mev_per_A"]


def test_eval_refuses_an_unknown_symmetrization(files):
    result = run_petmd("eval", files["pt"], files["data"], "--symmetrize", "grid 2")
    assert_one_line_error(result, "unknown symmetrization 'grid 2'", "grid:2i")


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


# --- every CLI input: a table of mistakes, each ending in one line that names it (exit 2), nothing left behind ------


@pytest.fixture(scope="module")
def inputs(files):
    base = files["base"] / "inputs"
    base.mkdir()
    (base / "bad.yaml").write_text("model: [\n")
    (base / "list.yaml").write_text("- 1\n- 2\n")
    (base / "garbage.xyz").write_text("this is not\nan xyz file\n")
    (base / "empty.xyz").write_text("")
    (base / "object.json").write_text('{"a": 1}')
    (base / "out-of-range.json").write_text("[0, 99]")
    (base / "folder").mkdir()
    (base / "xx.extxyz").write_text(
        '2\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 energy=-1.0 pbc="T T T"\nO 0 0 0\nXx 1 0 0\n'
    )
    (base / "nitrogen.extxyz").write_text(
        '2\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 energy=-1.0 pbc="T T T"\nO 0 0 0\nN 1 0 0\n'
    )
    (base / "duplicate.extxyz").write_text(
        '2\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 pbc="T T T"\nO 1 1 1\nH 1 1 1\n'
    )
    (base / "not-a-run").mkdir()
    return dict(files, inputs=base)


# (command line with {pt} {ckpt} {data} {in} (the inputs folder) {out} (a fresh folder), words of the message)
BAD_COMMANDS = {
    "train: no config file": ("train {in}/missing.yaml -o {out}/r", "cannot read config file {in}/missing.yaml"),
    "train: config a folder": ("train {in}/folder -o {out}/r", "Is a directory"),
    "train: not YAML": ("train {in}/bad.yaml -o {out}/r", "not valid YAML at line 2, column 1"),
    "train: YAML list": ("train {in}/list.yaml -o {out}/r", "top level must be a mapping"),
    "train: --max-steps 0": ("train {in}/list.yaml -o {out}/r --max-steps 0", "--max-steps 0: give a number"),
    "train: --max-time -5": ("train {cfg} -o {out}/r --max-time -5", "--max-time must be a number of seconds of at"),
    "train: no validation frames": ("train {cfg_no_validation} -o {out}/r", "data: no validation frames"),
    "train: --resume, no run": ("train {cfg} -o {out}/r --resume", "--resume: .*last.ckpt does not exist"),
    "train: --init and --resume": ("train {cfg} -o {out}/r --resume --init {ckpt}", "give one of them"),
    "eval: no data file": ("eval {pt} {in}/missing.xyz", "data file {in}/missing.xyz does not exist"),
    "eval: no model file": ("eval {in}/missing.pt {data}", "model file {in}/missing.pt does not exist"),
    "eval: model a folder": ("eval {in}/folder {data}", "is not a readable petmd checkpoint"),
    "eval: model not a model": ("eval {in}/garbage.xyz {data}", "is not a readable petmd checkpoint"),
    "eval: data not a structure": ("eval {pt} {in}/garbage.xyz", "cannot read {in}/garbage.xyz as a structure file"),
    "eval: empty data": ("eval {pt} {in}/empty.xyz", "data file {in}/empty.xyz is empty"),
    "eval: unknown symbol": ("eval {pt} {in}/xx.extxyz", "'Xx' is not a chemical element symbol"),
    "symmetry: element not in model": (
        "symmetry {pt} {in}/nitrogen.extxyz",
        "frame 0: element N is not a species of the model",
    ),
    "eval: no such energy key": ("eval {pt} {data} --energy-key nope", "frame 0 has no energy under key 'nope'"),
    "eval: no indices file": ("eval {pt} {data} --indices {in}/no.json", "--indices {in}/no.json: cannot read"),
    "eval: indices object": ("eval {pt} {data} --indices {in}/object.json", "must hold a 'validation' list"),
    "eval: index out of range": ("eval {pt} {data} --indices {in}/out-of-range.json", "frame index 99 out of range"),
    "symmetry: two atoms on one site": (
        "symmetry {pt} {in}/duplicate.extxyz",
        "{in}/duplicate.extxyz: frame 0: atoms 0 and 1 are 0 Å apart, closer than 0.1 Å",
    ),
    "symmetry: grid too large": ("symmetry {pt} {data} --grid 99", "grid '99' has 3842091 rotations, each a full"),
    "symmetry: random:0": ("symmetry {pt} {data} --grid random:0", "random:K needs a positive integer K"),
    "symmetry: random too large": ("symmetry {pt} {data} --grid random:100000", "has 100000 rotations"),
    "symmetry: unknown grid": ("symmetry {pt} {data} --grid 3x", "unknown rotation grid '3x'"),
    "symmetry: --seed -1": ("symmetry {pt} {data} --grid random:4 --seed -1", "--seed must be at least 0, got -1"),
    "symmetry: --stride 0": ("symmetry {pt} {data} --stride 0", "--stride must be at least 1, got 0"),
    "symmetry: --max-frames 0": ("symmetry {pt} {data} --max-frames 0", "--max-frames must be at least 1, got 0"),
    "symmetry: --max-frames -1": ("symmetry {pt} {data} --max-frames -1", "--max-frames must be at least 1, got -1"),
    "symmetry: --atoms-per-batch 0": ("symmetry {pt} {data} --atoms-per-batch 0", "--atoms-per-batch must be at"),
    "symmetry: unknown mode": ("symmetry {pt} {data} --symmetrize twice", "unknown symmetrization 'twice'"),
    "symmetry: -o a file": ("symmetry {pt} {data} -o {data}", "-o {data} is a file: give a folder"),
    "export: -o a folder": ("export {ckpt} -o {in}/folder", "is a directory: give the model file's path"),
    "export: -o below a file": ("export {ckpt} -o {data}/m.pt", "cannot use {data}: File exists .a file stands"),
    "export: grid too large": ("export {ckpt} -o {out}/m.pt --symmetrize grid:99", "has 3842091 rotations"),
    "export: unknown mode": ("export {ckpt} -o {out}/m.pt --symmetrize twice", "unknown symmetrization 'twice'"),
    "export: no checkpoint": ("export {in}/missing.ckpt -o {out}/m.pt", "model file {in}/missing.ckpt does not"),
    "export: weights of an export": (
        "export {pt} -o {out}/m.pt --weights-checkpoint {out}/w.ckpt",
        "exported TorchScript model, not a training checkpoint",
    ),
    "observables: no file": ("observables {in}/missing.dump -o {out}/o", "{in}/missing.dump does not exist"),
    "observables: not a trajectory": ("observables {in}/garbage.xyz -o {out}/o", "cannot read {in}/garbage.xyz"),
    "observables: --blocks 1": ("observables {data} -o {out}/o --blocks 1", "--blocks must be at least 2"),
    "observables: --r-max 0": ("observables {data} -o {out}/o --r-max 0", "--r-max must be positive, got 0"),
    "observables: --rdf-bins 0": ("observables {data} -o {out}/o --rdf-bins 0", "--rdf-bins must be at least 1"),
    "observables: --timestep -1": ("observables {data} -o {out}/o --timestep -1", "--timestep must be positive"),
    "observables: --discard -1": ("observables {data} -o {out}/o --discard -1", "--discard must be at least 0"),
    "observables: --max-lag 0": ("observables {data} -o {out}/o --max-lag 0", "--max-lag must be positive"),
    "observables: --fit reversed": ("observables {data} -o {out}/o --fit 5 1", "--fit needs 0 <= START < END"),
    "observables: -o a file": ("observables {data} -o {data}", "-o {data} is a file: give a folder"),
    "compare: one run": ("compare {in}/not-a-run -o {out}/c", "compare needs at least two runs"),
    "compare: not a run": ("compare {in}/not-a-run {in}/not-a-run -o {out}/c", "has no observables.json"),
    "compare: --threshold 0": ("compare {in}/a {in}/b -o {out}/c --threshold 0", "--threshold must be a positive"),
}


@pytest.mark.parametrize("case", BAD_COMMANDS)
def test_a_mistake_on_the_command_line_is_one_line(case, inputs, tmp_path, capsys):
    from petmd.cli import main

    command, message = BAD_COMMANDS[case]
    names = {"pt": inputs["pt"], "ckpt": inputs["ckpt"], "data": inputs["data"], "in": inputs["inputs"]}
    names.update(out=tmp_path, cfg=write_config(tmp_path / "cfg.yaml", inputs["data"]))
    no_validation = names["cfg"].read_text().replace("validation_fraction: 0.25", "validation_fraction: 0.0")
    names["cfg_no_validation"] = tmp_path / "no-validation.yaml"
    names["cfg_no_validation"].write_text(no_validation)
    status = main([word.format(**names) for word in command.split()])
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"petmd {command.split()[0]}: error: ")
    assert re.search(message.format(**names), last), last
    leftovers = [p for p in [*tmp_path.rglob(".*"), *inputs["inputs"].rglob(".*")] if ".tmp" in p.name]
    assert not leftovers


def test_a_failure_no_check_foresaw_is_reported_as_a_bug(inputs, monkeypatch, capsys):
    import petmd.evaluate
    from petmd.cli import main

    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(petmd.evaluate, "evaluate", broken)
    assert main(["eval", str(inputs["pt"]), str(inputs["data"])]) == 1
    stderr = capsys.readouterr().err
    assert "Traceback" in stderr and "ValueError: an internal inconsistency" in stderr
    assert stderr.strip().splitlines()[-1].startswith("petmd eval: this is a bug in petmd, not a mistake in the input")


def _help_of(command: str, option: str) -> str:
    from petmd.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in subparsers.choices[command]._actions if option in a.option_strings)
    return " ".join(action.help.split())


def test_every_form_a_help_text_shows_is_accepted(files):
    """The forms the help texts of --grid and --symmetrize promise are the ones the code takes."""
    from petmd.loading import load_model
    from petmd.symmetry import rotation_grid

    grid_help = _help_of("symmetry", "--grid")
    for form in ("0", "i", "2", "2i", "3i", "random:K"):
        assert form in grid_help, form
        assert rotation_grid(form.replace("K", "4")).size >= 1
    model = load_model(files["pt"])
    for command in ("symmetry", "export"):
        text = _help_of(command, "--symmetrize")
        for mode in ("none", "random", "grid:G", "ecse"):
            assert mode in text, (command, mode)
            model.set_symmetrization(mode.replace("G", "2i"))
    assert "grid:2i" in _help_of("export", "--symmetrize")
