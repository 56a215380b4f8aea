"""Training: it learns, it is deterministic, and a run killed at any point resumes to the same state."""

from __future__ import annotations

import csv
import signal

import ase.io
import numpy as np
import pytest
import torch
import yaml

from conftest import run_petmd, write_config, write_labelled_data
from petmd.batch import random_rotations
from petmd.checkpoint import load_checkpoint, save_checkpoint, without_optimizer_weights


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_labelled_data(tmp_path_factory.mktemp("data") / "lj.extxyz", n_frames=8)


def final_state(run_dir):
    state = load_checkpoint(run_dir / "last.ckpt")
    return state


def assert_same_state(a, b):
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    for key, value in a["model_state"].items():
        torch.testing.assert_close(b["model_state"][key], value, rtol=1e-9, atol=1e-12)
    assert len(a["history"]) == len(b["history"])
    for row_a, row_b in zip(a["history"], b["history"]):
        assert row_a["val_force_mae_mev_per_A"] == pytest.approx(row_b["val_force_mae_mev_per_A"], rel=1e-8)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, data):
    base = tmp_path_factory.mktemp("ref")
    cfg = write_config(base / "cfg.yaml", data)
    result = run_petmd("train", cfg, "-o", base / "run", "--no-progress", check=True)
    (base / "run" / "stderr.txt").write_text(result.stderr)
    (base / "run" / "stdout.txt").write_text(result.stdout)
    return cfg, base / "run"


def test_training_writes_outputs_and_reduces_the_loss(reference_run):
    _, run = reference_run
    # without progress bars, the log on stderr still shows each epoch and each mid-epoch checkpoint (every step
    # here: checkpoint_every_s 0); stdout holds only the final summary
    log = (run / "stderr.txt").read_text()
    assert "epoch 1/3: batch 1/3, mean loss" in log and "checkpoint written" in log
    assert "atoms/s over the last 1 batches" in log  # the rate since the previous line, not since the start
    assert "epoch    3  loss" in log and "val F" in log
    assert "checkpoint written" not in (run / "stdout.txt").read_text()
    for name in ("last.ckpt", "best.ckpt", "metrics.csv", "config.yaml", "split.json"):
        assert (run / name).exists(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    state = final_state(run)
    assert state["epoch"] == 3 and state["step_in_epoch"] == 0
    assert sorted(state["validation_indices"]) == state["validation_indices"] and len(state["validation_indices"]) == 2


def test_killed_mid_epoch_resumes_to_the_same_state(tmp_path, reference_run):
    cfg, ref = reference_run
    run = tmp_path / "run"
    # 3 steps per epoch: step 5 is in the middle of epoch 2; checkpoint_every_s = 0 saves after every step
    killed = run_petmd("train", cfg, "-o", run, "--no-progress", env={"PETMD_DEBUG_KILL_AT_STEP": "5"})
    assert killed.returncode == -signal.SIGKILL
    partial = final_state(run)
    assert partial["epoch"] == 1 and 0 < partial["step_in_epoch"] < 3
    run_petmd("train", cfg, "-o", run, "--resume", "--no-progress", check=True)
    assert_same_state(final_state(ref), final_state(run))


def test_killed_while_writing_a_checkpoint_resumes(tmp_path, reference_run):
    cfg, ref = reference_run
    run = tmp_path / "run"
    killed = run_petmd("train", cfg, "-o", run, "--no-progress", env={"PETMD_DEBUG_KILL_IN_SAVE": "4"})
    assert killed.returncode == -signal.SIGKILL
    assert any(p.name.startswith(".last.ckpt.tmp") or p.name.startswith(".best.ckpt.tmp") for p in run.iterdir())
    load_checkpoint(run / "last.ckpt")  # the previous checkpoint is intact
    run_petmd("train", cfg, "-o", run, "--resume", "--no-progress", check=True)
    assert_same_state(final_state(ref), final_state(run))


def test_max_time_stops_cleanly_and_resumes(tmp_path, reference_run):
    cfg, ref = reference_run
    run = tmp_path / "run"
    result = run_petmd("train", cfg, "-o", run, "--no-progress", "--max-time", "0", check=True)
    assert "max-time" in result.stdout
    assert final_state(run)["global_step"] == 1
    run_petmd("train", cfg, "-o", run, "--resume", "--no-progress", check=True)
    assert_same_state(final_state(ref), final_state(run))


def test_max_steps_stops_at_that_step_and_resumes(tmp_path, reference_run):
    cfg, ref = reference_run
    run = tmp_path / "run"
    # 3 steps per epoch: step 4 is mid-epoch 2, step 6 the end of epoch 2 (validated, then stopped)
    result = run_petmd("train", cfg, "-o", run, "--no-progress", "--max-steps", "4", check=True)
    assert "max-steps" in result.stdout
    state = final_state(run)
    assert (state["global_step"], state["epoch"], state["step_in_epoch"]) == (4, 1, 1)
    run_petmd("train", cfg, "-o", run, "--resume", "--no-progress", "--max-steps", "6", check=True)
    state = final_state(run)
    assert (state["global_step"], state["epoch"], state["step_in_epoch"], len(state["history"])) == (6, 2, 0, 2)
    run_petmd("train", cfg, "-o", run, "--resume", "--no-progress", "--max-steps", "6", check=True)
    assert final_state(run)["global_step"] == 6  # already there: nothing more
    run_petmd("train", cfg, "-o", run, "--resume", "--no-progress", check=True)
    assert_same_state(final_state(ref), final_state(run))
    bad = run_petmd("train", cfg, "-o", tmp_path / "other", "--max-steps", "0")
    assert bad.returncode == 2 and "--max-steps 0" in bad.stderr and not (tmp_path / "other").exists()


def test_json_summary_gives_the_rates_and_sizes_that_size_a_run(tmp_path, reference_run, data):
    import json

    import ase.io

    cfg, _ = reference_run
    result = run_petmd("train", cfg, "-o", tmp_path / "run", "--no-progress", "--max-steps", "2", "--json", check=True)
    summary = json.loads(result.stdout)
    state = final_state(tmp_path / "run")
    sizes = [len(atoms) for atoms in ase.io.read(data, ":")]
    assert summary["validation_atoms"] == sum(sizes[i] for i in state["validation_indices"])
    assert summary["train_atoms_per_epoch"] + summary["validation_atoms"] == sum(sizes)
    # the second step alone: a rate, not the first step's warm-up
    assert summary["steady_train_atoms_per_s"] > 0 and "peak_device_memory_mib" not in summary


def test_existing_run_is_not_overwritten(reference_run):
    cfg, run = reference_run
    before = (run / "last.ckpt").read_bytes()
    result = run_petmd("train", cfg, "-o", run, "--no-progress")
    assert result.returncode == 2 and "--resume" in result.stderr
    assert (run / "last.ckpt").read_bytes() == before


def test_resume_with_a_different_model_is_refused(tmp_path, reference_run, data):
    _, run = reference_run
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = write_config(tmp_path / "other.yaml", data)
    text = cfg.read_text().replace("d_model: 16", "d_model: 32")
    cfg.write_text(text)
    result = run_petmd("train", cfg, "-o", copy, "--resume", "--no-progress")
    assert result.returncode == 2 and "model.d_model" in result.stderr


@pytest.mark.parametrize(
    "change, accepted",
    [
        ({"learning_rate": 5e-4}, False),
        ({"epochs": 5}, False),
        ({"seed": 2}, False),
        ({"dtype": "float32"}, False),
        ({"num_threads": 2}, True),
        ({"checkpoint_every_s": 60.0}, True),
    ],
    ids=lambda value: str(value),
)
def test_resume_refuses_another_recipe_and_accepts_another_machine(tmp_path, reference_run, data, change, accepted):
    """--resume continues the same run: a changed training key that alters what is computed is refused with the
    way to start a new run from the state; one that says where it runs is taken, and config.yaml records it."""
    _, run = reference_run
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = (copy / "config.yaml").read_text()
    result = run_petmd("train", write_config(tmp_path / "cfg.yaml", data, **change), "-o", copy, "--resume")
    ((key, value),) = change.items()
    saved = yaml.safe_load((copy / "config.yaml").read_text())["training"][key]
    if accepted:
        assert result.returncode == 0, result.stderr
        assert saved == value
    else:
        assert result.returncode == 2 and f"config key 'training.{key}' is {value!r}" in result.stderr
        assert f"--init {copy / 'last.ckpt'}" in result.stderr
        assert (copy / "config.yaml").read_text() == before


def test_an_element_only_in_validation_frames_is_refused(tmp_path):
    frames = ase.io.read(write_labelled_data(tmp_path / "data.extxyz", n_frames=6), ":")
    frames[4].numbers[1] = 7  # one hydrogen of a validation frame becomes nitrogen
    ase.io.write(tmp_path / "mixed.extxyz", frames, format="extxyz")
    cfg = write_config(tmp_path / "cfg.yaml", tmp_path / "mixed.extxyz")
    text = yaml.safe_load(cfg.read_text())
    text["data"] = {"path": str(tmp_path / "mixed.extxyz"), "validation_indices": [4, 5]}
    cfg.write_text(yaml.safe_dump(text))
    result = run_petmd("train", cfg, "-o", tmp_path / "run", "--no-progress")
    assert result.returncode == 2
    assert "validation frame 4 of" in result.stderr and "holds N, which no training frame holds" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("saved_value, accepted", [(None, True), (False, False)])
def test_a_version_1_training_state_resumes_upgraded(tmp_path, reference_run, saved_value, accepted):
    """A training state in the oldest layout shipped (checkpoint version 1 of 2026-11-21: no training.chunk_atoms,
    variance_*, ema_decay or tf32, no model.neighbor_species_every_layer, no initialized_from) resumes, the keys it
    predates taking their defaults; one that holds another value than the config's (neighbor species in the first
    layer only, against the default every layer) is refused."""
    import shutil

    cfg, run = reference_run
    assert "neighbor_species_every_layer" not in cfg.read_text()  # the config leaves it at its default, True
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    state = dict(load_checkpoint(copy / "last.ckpt"))
    for key in ("chunk_atoms", "variance_copies", "variance_weight", "ema_decay", "tf32"):
        del state["config"]["training"][key]
    del state["config"]["model"]["neighbor_species_every_layer"]
    if saved_value is not None:
        state["config"]["model"]["neighbor_species_every_layer"] = saved_value
    del state["initialized_from"]
    torch.save({**state, "version": 1}, copy / "last.ckpt")
    result = run_petmd("train", cfg, "-o", copy, "--resume", "--no-progress")
    if accepted:
        assert result.returncode == 0, result.stderr
        assert load_checkpoint(copy / "last.ckpt")["version"] == 2
    else:
        assert result.returncode == 2 and "model.neighbor_species_every_layer" in result.stderr


def test_init_starts_a_new_run_from_a_checkpoints_weights(tmp_path, reference_run, data):
    _, run = reference_run
    weights_only = tmp_path / "weights.ckpt"
    run_petmd("export", run / "last.ckpt", "-o", tmp_path / "m.pt", "--weights-checkpoint", weights_only, check=True)
    # learning rate 0: the new run's weights are exactly the checkpoint's, so they were loaded, not re-initialised
    cfg = write_config(tmp_path / "still.yaml", data, learning_rate=0.0, epochs=1)
    result = run_petmd("train", cfg, "-o", tmp_path / "still", "--init", weights_only, "--no-progress", check=True)
    assert f"started from the weights of {weights_only}" in result.stdout
    assert "validation split" not in result.stderr  # same data, same split
    before, after = load_checkpoint(run / "last.ckpt"), load_checkpoint(tmp_path / "still" / "last.ckpt")
    for key, value in before["model_state"].items():
        torch.testing.assert_close(after["model_state"][key], value, rtol=0, atol=0)
    assert after["sigma_f"] == before["sigma_f"]
    assert after["epoch"] == 1 and len(after["history"]) == 1  # a fresh schedule and history
    assert after["initialized_from"] == str(weights_only)
    # and it trains on from there
    cfg = write_config(tmp_path / "on.yaml", data, epochs=1)
    run_petmd("train", cfg, "-o", tmp_path / "on", "--init", run / "last.ckpt", "--no-progress", check=True)
    moved = load_checkpoint(tmp_path / "on" / "last.ckpt")["model_state"]
    assert any(not torch.equal(moved[k], v) for k, v in before["model_state"].items())
    # another split of the same file: the weights may have seen this run's validation frames
    cfg.write_text(cfg.read_text().replace("validation_fraction: 0.25", "validation_fraction: 0.5"))
    result = run_petmd("train", cfg, "-o", tmp_path / "leak", "--init", run / "last.ckpt", "--no-progress", check=True)
    assert "another validation split" in result.stderr and data.name in result.stderr
    # the same split change on another data file is fine-tuning, not a leak
    import shutil

    other = shutil.copy(data, tmp_path / "other.extxyz")
    cfg.write_text(cfg.read_text().replace(str(data), str(other)))
    result = run_petmd("train", cfg, "-o", tmp_path / "other", "--init", run / "last.ckpt", "--no-progress", check=True)
    assert str(other) in cfg.read_text() and "validation split" not in result.stderr


def test_init_is_refused_for_another_model_or_with_resume(tmp_path, reference_run, data):
    cfg, run = reference_run
    other = write_config(tmp_path / "other.yaml", data)
    other.write_text(other.read_text().replace("d_model: 16", "d_model: 32"))
    result = run_petmd("train", other, "-o", tmp_path / "a", "--init", run / "last.ckpt", "--no-progress")
    assert result.returncode == 2 and "model.d_model" in result.stderr and "--init" in result.stderr
    result = run_petmd("train", cfg, "-o", run, "--resume", "--init", run / "last.ckpt", "--no-progress")
    assert result.returncode == 2 and "--resume" in result.stderr
    result = run_petmd("train", cfg, "-o", tmp_path / "b", "--init", tmp_path / "missing.ckpt", "--no-progress")
    assert result.returncode == 2 and "missing.ckpt" in result.stderr


def test_random_rotations_cover_o3():
    q = random_rotations(2000, np.random.default_rng(0))
    np.testing.assert_allclose(q @ q.transpose(0, 2, 1), np.broadcast_to(np.eye(3), q.shape), atol=1e-12)
    det = np.linalg.det(q)
    np.testing.assert_allclose(np.abs(det), 1.0, atol=1e-12)
    assert 0.45 < np.mean(det < 0) < 0.55  # inversion with probability ½
    # uniform (Haar) rotations: the rotated z axis has mean ~0 and <z_i²> = 1/3
    z = q[:, :, 2] * det[:, None]
    assert np.abs(z.mean(0)).max() < 0.05
    np.testing.assert_allclose((z**2).mean(0), 1 / 3, atol=0.03)


def test_validation_split_by_fraction_or_list():
    from petmd.data import split_indices
    from petmd.errors import PetmdError

    train, val = split_indices(100, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 90 and not set(train) & set(val)
    np.testing.assert_array_equal(split_indices(100, 0.1, seed=3)[1], val)  # fixed by the seed
    assert not np.array_equal(split_indices(100, 0.1, seed=4)[1], val)
    train, val = split_indices(10, 0.5, seed=0, validation_indices=[7, 2, 2])
    assert list(val) == [2, 7] and len(train) == 8
    with pytest.raises(PetmdError, match="validation_indices"):
        split_indices(10, 0.1, seed=0, validation_indices=[10])


def test_rotational_variance_penalty_removes_the_variance_it_measures():
    """Minimising the penalty alone (fresh rotations every step) makes a random-weight PET's energy and forces
    nearly the same for rotations it never saw."""
    from conftest import frame, small_pet, water_box
    from petmd.batch import collate
    from petmd.objective import rotational_variance

    model = small_pet(seed=3)
    f = frame(water_box(1, seed=2))
    copies = 4

    def variance(rotations):
        batch = collate([f] * copies, rotations=rotations)
        out = model(**batch.model_inputs(), compute_forces=True, create_graph=True)
        return rotational_variance(out, batch, rotations, copies)

    held_out = random_rotations(copies, np.random.default_rng(99))
    before = float(variance(held_out).detach())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(40):
        optimizer.zero_grad()
        variance(random_rotations(copies, rng)).backward()
        optimizer.step()
    after = float(variance(held_out).detach())
    assert after < 0.1 * before, (before, after)


def test_training_with_the_penalty_adds_it_to_the_loss(tmp_path, data):
    losses = {}
    for weight in (0.0, 1e4):
        cfg = write_config(
            tmp_path / f"w{weight:g}.yaml",
            data,
            epochs=1,
            variance_copies=2,
            variance_weight=weight,
            atoms_per_batch=96,
        )
        run_petmd("train", cfg, "-o", tmp_path / f"w{weight:g}", "--no-progress", check=True)
        with open(tmp_path / f"w{weight:g}" / "metrics.csv") as fh:
            losses[weight] = float(next(csv.DictReader(fh))["train_loss"])
    assert losses[1e4] > losses[0.0]


def test_variance_penalty_settings_are_checked(tmp_path, data):
    for settings, message in [
        ({"variance_copies": 0}, "variance_copies must be at least 1"),
        ({"variance_weight": 1.0}, "needs training.variance_copies >= 2"),
        ({"variance_weight": -1.0, "variance_copies": 2}, "must not be negative"),
    ]:
        cfg = write_config(tmp_path / "bad.yaml", data, **settings)
        result = run_petmd("train", cfg, "-o", tmp_path / "bad")
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_moving_average_of_the_weights_is_what_is_validated_shipped_and_resumed(tmp_path, data):
    import json

    from petmd.evaluate import evaluate

    cfg = write_config(tmp_path / "ema.yaml", data, ema_decay=0.7)
    ref = tmp_path / "ref"
    result = run_petmd("train", cfg, "-o", ref, "--no-progress", check=True)
    assert "moving average of the weights (decay 0.7)" in result.stdout
    state = final_state(ref)
    averaged, own = state["model_state"], state["training_model_state"]
    assert state["ema_updates"] == state["global_step"] == 9
    assert any(not torch.allclose(averaged[k], own[k]) for k in own)
    # the validation figure is the averaged weights' (the same frames through `petmd eval`), not the optimizer's
    split = json.loads((ref / "split.json").read_text())
    figure = evaluate(ref / "last.ckpt", data, indices=split["validation"], progress=False)
    assert figure["force_mae_mev_per_A"] == pytest.approx(state["history"][-1]["val_force_mae_mev_per_A"], rel=1e-9)
    # shipped: the weights-only checkpoint holds the averaged weights and no optimizer-side copy
    run_petmd(
        "export", ref / "last.ckpt", "-o", tmp_path / "m.pt", "--weights-checkpoint", tmp_path / "w.ckpt", check=True
    )
    shipped = load_checkpoint(tmp_path / "w.ckpt")
    assert "training_model_state" not in shipped
    for key, value in averaged.items():
        torch.testing.assert_close(shipped["model_state"][key], value, rtol=0, atol=0)
    # killed mid-epoch, the resumed run ends with the same averaged and optimizer weights
    run = tmp_path / "run"
    killed = run_petmd("train", cfg, "-o", run, "--no-progress", env={"PETMD_DEBUG_KILL_AT_STEP": "5"})
    assert killed.returncode == -signal.SIGKILL
    run_petmd("train", cfg, "-o", run, "--resume", "--no-progress", check=True)
    resumed = final_state(run)
    assert_same_state(state, resumed)
    for key, value in own.items():
        torch.testing.assert_close(resumed["training_model_state"][key], value, rtol=1e-9, atol=1e-12)
    assert resumed["ema_updates"] == 9


def test_moving_average_decay_is_checked(tmp_path, data):
    cfg = write_config(tmp_path / "bad.yaml", data, ema_decay=1.0)
    result = run_petmd("train", cfg, "-o", tmp_path / "run", "--no-progress")
    assert result.returncode == 2 and "training.ema_decay" in result.stderr and "[0, 1)" in result.stderr


def test_tf32_is_refused_off_cuda(tmp_path, data):
    cfg = write_config(tmp_path / "tf32.yaml", data, tf32=True)
    result = run_petmd("train", cfg, "-o", tmp_path / "run", "--no-progress")
    assert result.returncode == 2 and "training.tf32: true needs a CUDA device" in result.stderr, result.stderr
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_a_state_without_the_optimizers_weights_continues_from_the_averaged_ones(tmp_path, data):
    # what tools/offline-gpu/pack.sh sends to a GPU machine: the averaged weights, moments and position only
    cfg = write_config(tmp_path / "ema.yaml", data, ema_decay=0.7)
    run = tmp_path / "run"
    killed = run_petmd("train", cfg, "-o", run, "--no-progress", env={"PETMD_DEBUG_KILL_AT_STEP": "5"})
    assert killed.returncode == -signal.SIGKILL
    state = final_state(run)
    assert state["global_step"] == 4  # the kill came before step 5's checkpoint
    assert "training_model_state" in state
    save_checkpoint(without_optimizer_weights(state), run / "last.ckpt")
    result = run_petmd("train", cfg, "-o", run, "--resume", "--no-progress", check=True)
    assert "the average starts afresh" in result.stderr
    resumed = final_state(run)
    assert resumed["global_step"] == 9 and resumed["ema_updates"] == 5
