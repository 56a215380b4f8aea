"""The shipped models (models/): each config is the one its checkpoint was trained with, each exported model is its
checkpoint, so that `petmd train --init/--resume` with the shipped config and `petmd export` of the shipped weights
reproduce what models/README.md says."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from conftest import frame, water_box
from petmd.checkpoint import load_checkpoint
from petmd.config import config_from_dict, load_config
from petmd.loading import load_model

MODELS = Path(__file__).resolve().parents[1] / "models"

# (config, checkpoint, sections that must be the checkpoint's): a continuation config keeps the model and data
# sections (or --init refuses) and has its own training section
PAIRS = [
    ("pet-water.yaml", "pet-water.ckpt", ("model", "data", "training")),
    ("pet-water-small.yaml", "pet-water-small.ckpt", ("model", "data", "training")),
    ("pet-water-continue.yaml", "pet-water.ckpt", ("model", "data")),
    ("pet-water-small-continue.yaml", "pet-water-small.ckpt", ("model", "data")),
]


@pytest.mark.parametrize("config_name, checkpoint_name, sections", PAIRS)
def test_shipped_config_is_the_checkpoints(config_name, checkpoint_name, sections):
    config = load_config(MODELS / config_name)
    # read as a config file is: keys a checkpoint predates (written before the option existed) get their default
    saved = config_from_dict(load_checkpoint(MODELS / checkpoint_name)["config"], f"models/{checkpoint_name}")
    for section in sections:
        ours, theirs = asdict(getattr(config, section)), asdict(getattr(saved, section))
        for settings in (ours, theirs):
            settings.pop("path", None)  # the data's location is the machine's, not the model's
        differing = {k: (v, theirs[k]) for k, v in ours.items() if v != theirs[k]}
        assert not differing, f"models/{config_name} [{section}] differs from models/{checkpoint_name}: {differing}"


@pytest.mark.parametrize("name", ["pet-water-small", "pet-water"])
def test_shipped_export_is_its_checkpoint(name):
    atoms = water_box(n_side=2, seed=3)
    exported = load_model(MODELS / f"{name}.pt")
    weights = load_model(MODELS / f"{name}.ckpt")
    assert exported.metadata["dtype"] == "float32"
    a, b = ({k: v.detach() for k, v in m(frame(atoms)).items()} for m in (exported, weights))
    # both run in float32; a re-export of other weights differs by far more than 0.1 meV/atom or 1 meV/Å
    assert abs(a["energy"].item() - b["energy"].item()) < 1e-4 * len(atoms)
    assert torch.allclose(a["forces"], b["forces"], rtol=0, atol=1e-3)


def test_the_small_model_carries_its_uncertainty_calibration():
    """Calibrated on its own split (docs/uncertainty.md): the covariance of the 1,439 training frames, α on the 160
    validation frames, whose errors then fall within 1σ and 2σ about as a Gaussian's would."""
    calibration = load_model(MODELS / "pet-water-small.pt").metadata["uncertainty"]
    assert calibration["training_frames"] == 1439 and calibration["validation"]["n_frames"] == 160
    assert 0.6 < calibration["validation"]["within_1_sigma"] < 0.76
    assert 0.9 < calibration["validation"]["within_2_sigma"] <= 1.0
