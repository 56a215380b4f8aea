"""Training checkpoints: written atomically (temp file, fsync, rename), checked and upgraded to the current layout
when read (one function per earlier version)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypedDict, cast

import torch

from .atomic import atomic_output
from .config import Config, ModelConfig
from .errors import PetmdError
from .model import PET
from .precision import torch_dtype

FORMAT = "petmd-checkpoint"
VERSION = 2
_saves = 0  # checkpoint writes in this process, for the PETMD_DEBUG_KILL_IN_SAVE test hook


def save_checkpoint(state: CheckpointState | dict, path: str | Path) -> None:
    global _saves
    with atomic_output(path) as fh:
        torch.save({"format": FORMAT, "version": VERSION, **state}, fh)
        _saves += 1
        if os.environ.get("PETMD_DEBUG_KILL_IN_SAVE") == str(_saves):
            _debug_kill()


# what a model needs to be exported, evaluated or used to start a new training (no optimizer moments, RNG state)
WEIGHTS_ONLY_KEYS = (
    "petmd_version",
    "config",
    "atomic_numbers",
    "model_state",
    "sigma_e",
    "sigma_f",
    "epoch",
    "global_step",
    "best_val_force_mae",
    "history",
    "elapsed_s",
    "validation_indices",
    "initialized_from",
)


# a run with a moving average of the weights keeps the optimizer's own weights beside the averaged ones (model_state)
OPTIMIZER_WEIGHTS_KEYS = ("training_model_state", "ema_updates")

# what `petmd train --resume` needs beyond the weights
RESUME_KEYS = ("optimizer_state", "step_in_epoch", "torch_rng")


class CheckpointState(TypedDict, total=False):
    """The layout of VERSION. Every checkpoint holds WEIGHTS_ONLY_KEYS; a training state adds RESUME_KEYS, and
    OPTIMIZER_WEIGHTS_KEYS when it averages the weights."""

    format: str
    version: int
    petmd_version: str
    config: Dict[str, Dict[str, Any]]  # every key of every section (config.Config.to_dict())
    atomic_numbers: List[int]
    model_state: Dict[str, torch.Tensor]  # the weights that are validated and exported (averaged, with ema_decay)
    sigma_e: float  # the data's energy and force spreads (eV/atom, eV/Å): the model's output scale
    sigma_f: float
    epoch: int  # epochs completed
    global_step: int
    best_val_force_mae: float
    history: List[Dict[str, Any]]  # one row of validation figures per epoch
    elapsed_s: float
    validation_indices: List[int]
    initialized_from: Optional[str]  # the checkpoint `--init` started this run from
    optimizer_state: Dict[str, Any]
    step_in_epoch: int
    torch_rng: torch.Tensor
    training_model_state: Dict[str, torch.Tensor]
    ema_updates: int


def upgrade_v1_to_v2(state: dict) -> dict:
    """Version 1 (2026-11-21 to 2026-12-04) stored the config as it then was: keys added since are missing (e.g.
    training.chunk_atoms, variance_copies, variance_weight, ema_decay, tf32), and so is initialized_from before
    --init existed. Version 2 holds every key. A missing key takes its default, which is how those runs trained
    (no variance penalty, no moving average, no TF32; chunk_atoms only changes the gradient's round-off)."""
    saved = state["config"]
    config = {section: {**defaults, **(saved.get(section) or {})} for section, defaults in Config().to_dict().items()}
    return {**state, "config": config, "initialized_from": state.get("initialized_from"), "version": 2}


# version → the function that brings a checkpoint of that version to the next one
UPGRADES: Dict[int, Callable[[dict], dict]] = {1: upgrade_v1_to_v2}


def without_optimizer_weights(state: CheckpointState) -> CheckpointState:
    """A training state that resumes from its averaged weights (the average starting afresh): 8.5 MB smaller for the
    study-size model, what travels to a GPU machine."""
    return cast(CheckpointState, {k: v for k, v in state.items() if k not in OPTIMIZER_WEIGHTS_KEYS})


def save_weights_only(state: CheckpointState, path: str | Path) -> None:
    """A checkpoint with the weights, config and training history but no optimizer state: a third of the size, for
    shipping a model; `petmd export` and `petmd eval` read it, `petmd train --resume` does not."""
    save_checkpoint({k: v for k, v in state.items() if k in WEIGHTS_ONLY_KEYS}, path)


def load_checkpoint(path: str | Path) -> CheckpointState:
    path = Path(path)
    if not path.exists():
        raise PetmdError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise PetmdError(f"checkpoint {path} is empty (an interrupted copy?)")
    if is_exported_model(path):
        raise PetmdError(f"{path} is an exported TorchScript model, not a training checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PetmdError(
            f"{path} is not a readable petmd checkpoint (corrupted or wrong format: {type(err).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PetmdError(f"{path} is not a petmd checkpoint (no '{FORMAT}' format marker)")
    version = state.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise PetmdError(
            f"{path} has checkpoint version {version}; this petmd reads versions 1 to {VERSION}: use the petmd "
            "that wrote it"
        )
    try:
        while state["version"] < VERSION:
            state = UPGRADES[state["version"]](state)
    except KeyError as err:  # a part the upgrade reads is missing
        raise PetmdError(f"{path}: checkpoint version {version} without {err.args[0]} (an incomplete copy?)") from None
    missing = [key for key in WEIGHTS_ONLY_KEYS if key not in state]
    if missing:
        raise PetmdError(f"{path}: checkpoint version {version} without {', '.join(missing)} (an incomplete copy?)")
    return cast(CheckpointState, state)


def is_exported_model(path: str | Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(
                name.endswith("constants.pkl") or name.endswith("code/__torch__.py") or "/code/" in name
                for name in zf.namelist()
            )
    except (zipfile.BadZipFile, OSError):
        return False


def build_model(model_config: dict, atomic_numbers, weights: Dict[str, torch.Tensor], dtype: str) -> PET:
    """PET from a config's model section (a dict, as checkpoints and exported metadata store it) with ``weights``
    in ``dtype``. The model takes its dtype before the weights: load_state_dict casts to the parameters' dtype, and a
    float32 model would round float64 weights."""
    model = PET(atomic_numbers, ModelConfig(**model_config)).to(torch_dtype(dtype))
    model.load_state_dict(weights)
    return model


def model_from_checkpoint(state: CheckpointState, source: str = "checkpoint") -> PET:
    try:
        return build_model(
            state["config"]["model"],
            state["atomic_numbers"],
            state["model_state"],
            state["config"]["training"]["dtype"],
        )
    except (KeyError, TypeError, RuntimeError) as err:
        raise PetmdError(f"{source}: checkpoint does not hold a consistent PET model ({err})") from None


def _debug_kill() -> None:
    # test hooks (PETMD_DEBUG_KILL_AT_STEP=N, PETMD_DEBUG_KILL_IN_SAVE=N): a real SIGKILL at a chosen point, so the
    # resume tests exercise the real failure rather than a simulated one
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
