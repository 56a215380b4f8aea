"""Config values out of range are refused before anything runs, with the key, the value and what it must be."""

from __future__ import annotations

import pytest

from conftest import run_petmd, write_config
from petmd.config import config_from_dict
from petmd.errors import PetmdError

BAD_VALUES = [
    ("training", "epochs", 0, "training.epochs must be at least 1"),
    ("training", "epochs", -3, "training.epochs must be at least 1"),
    ("training", "atoms_per_batch", 0, "training.atoms_per_batch must be at least 1"),
    ("training", "validation_atoms_per_batch", 0, "training.validation_atoms_per_batch must be at least 1"),
    ("training", "learning_rate", -1e-3, "training.learning_rate must be at least 0"),
    ("training", "weight_decay", -0.1, "training.weight_decay must be at least 0"),
    ("training", "stress_weight", -1.0, "training.stress_weight must be at least 0"),
    ("training", "warmup_steps", -1, "training.warmup_steps must be at least 0"),
    ("training", "step_decay_every", 0, "training.step_decay_every must be at least 1"),
    ("training", "step_decay_factor", 0, "training.step_decay_factor must be greater than 0"),
    ("training", "step_decay_factor", 2.0, "must be at most 1"),
    ("training", "min_lr_ratio", 1.5, "must be at most 1"),
    ("training", "grad_clip", -1, "training.grad_clip must be at least 0"),
    ("training", "energy_weight", -1, "training.energy_weight must be at least 0"),
    ("training", "checkpoint_every_s", -5, "training.checkpoint_every_s must be at least 0"),
    ("training", "num_threads", 0, "training.num_threads must be at least 1"),
    ("data", "stride", 0, "data.stride must be at least 1"),
    ("data", "max_frames", 0, "data.max_frames must be at least 1"),
    ("model", "cutoff", -4.0, "model.cutoff must be greater than 0"),
    ("model", "n_gnn_layers", 0, "model.n_gnn_layers must be at least 1"),
    ("model", "d_model", 0, "model.d_model must be at least 1"),
]


@pytest.mark.parametrize("section, key, value, message", BAD_VALUES, ids=[f"{s}.{k}={v}" for s, k, v, _ in BAD_VALUES])
def test_a_value_out_of_range_is_refused_with_the_key(section, key, value, message):
    with pytest.raises(PetmdError, match=message) as caught:
        config_from_dict({section: {key: value}}, "cfg.yaml")
    assert str(caught.value).startswith("cfg.yaml: ") and repr(value) in str(caught.value)


def test_nothing_to_fit_is_refused():
    with pytest.raises(PetmdError, match="are all 0: nothing to fit"):
        config_from_dict({"training": {"energy_weight": 0, "force_weight": 0}})


def test_petmd_train_refuses_zero_epochs_in_one_line_without_writing_a_run(tmp_path, scan_data_path):
    cfg = write_config(tmp_path / "cfg.yaml", scan_data_path, epochs=0)
    result = run_petmd("train", cfg, "-o", tmp_path / "run")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "training.epochs must be at least 1" in result.stderr
    assert not (tmp_path / "run").exists()
