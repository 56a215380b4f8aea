"""Checkpoints: every layout this repository has shipped loads, upgraded to the current one (the committed
models/*.ckpt are version 1 and stay so, as the stored cases); a newer version is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import small_pet, write_checkpoint
from petmd.checkpoint import VERSION, load_checkpoint
from petmd.config import Config, config_from_dict
from petmd.errors import PetmdError

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("name", ["pet-water.ckpt", "pet-water-small.ckpt"])
def test_shipped_version_1_checkpoints_load_upgraded(name):
    raw = torch.load(MODELS / name, map_location="cpu", weights_only=True)
    assert raw["version"] == 1  # stored as shipped
    state = load_checkpoint(MODELS / name)
    assert state["version"] == VERSION == 2
    for section, keys in Config().to_dict().items():
        assert set(state["config"][section]) == set(keys), section
        for key, value in raw["config"][section].items():
            assert state["config"][section][key] == value, (section, key)  # nothing it held changes
    assert "tf32" not in raw["config"]["training"] and state["config"]["training"]["tf32"] is False
    config_from_dict(state["config"], name)  # a valid config as it stands
    assert "initialized_from" in state


def test_a_newer_checkpoint_is_refused(tmp_path):
    path = write_checkpoint(tmp_path / "m.ckpt", small_pet())
    state = torch.load(path, weights_only=True)
    torch.save({**state, "version": VERSION + 1}, path)
    with pytest.raises(PetmdError, match=f"checkpoint version {VERSION + 1}; this petmd reads versions 1 to {VERSION}"):
        load_checkpoint(path)


def test_an_incomplete_version_1_checkpoint_says_what_it_lacks(tmp_path):
    path = write_checkpoint(tmp_path / "m.ckpt", small_pet())
    state = torch.load(path, weights_only=True)
    del state["config"]
    torch.save({**state, "version": 1}, path)
    with pytest.raises(PetmdError, match="checkpoint version 1 without config"):
        load_checkpoint(path)


def test_an_incomplete_checkpoint_says_what_it_lacks(tmp_path):
    path = write_checkpoint(tmp_path / "m.ckpt", small_pet())
    state = torch.load(path, weights_only=True)
    del state["sigma_f"]
    torch.save(state, path)
    with pytest.raises(PetmdError, match="without sigma_f"):
        load_checkpoint(path)
