"""Training checkpoints: written atomically (temp file, fsync, rename), checked when read."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch

from .config import ModelConfig
from .errors import PetmdError
from .model import PET

FORMAT = "petmd-checkpoint"
VERSION = 1
_saves = 0  # checkpoint writes in this process, for the PETMD_DEBUG_KILL_IN_SAVE test hook


def save_checkpoint(state: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save({"format": FORMAT, "version": VERSION, **state}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    global _saves
    _saves += 1
    if os.environ.get("PETMD_DEBUG_KILL_IN_SAVE") == str(_saves):
        _debug_kill()
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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


def without_optimizer_weights(state: dict) -> dict:
    """A training state that resumes from its averaged weights (the average starting afresh): 8.5 MB smaller for the
    study-size model, what travels to a GPU machine."""
    return {k: v for k, v in state.items() if k not in OPTIMIZER_WEIGHTS_KEYS}


def save_weights_only(state: dict, path: str | Path) -> None:
    """A checkpoint with the weights, config and training history but no optimizer state: a third of the size, for
    shipping a model; `petmd export` and `petmd eval` read it, `petmd train --resume` does not."""
    save_checkpoint({k: state[k] for k in WEIGHTS_ONLY_KEYS if k in state}, path)


def load_checkpoint(path: str | Path) -> dict:
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
    if state.get("version") != VERSION:
        raise PetmdError(f"{path} has checkpoint version {state.get('version')}; this petmd reads version {VERSION}")
    return state


def is_exported_model(path: str | Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(
                name.endswith("constants.pkl") or name.endswith("code/__torch__.py") or "/code/" in name
                for name in zf.namelist()
            )
    except (zipfile.BadZipFile, OSError):
        return False


def build_model(model_config: dict, atomic_numbers) -> PET:
    """PET from a config's model section (a dict, as checkpoints store it)."""
    return PET(atomic_numbers, ModelConfig(**model_config))


def model_from_checkpoint(state: dict, source: str = "checkpoint") -> PET:
    try:
        model = build_model(state["config"]["model"], state["atomic_numbers"])
        model.load_state_dict(state["model_state"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise PetmdError(f"{source}: checkpoint does not hold a consistent PET model ({err})") from None
    dtype = torch.float64 if state["config"]["training"].get("dtype") == "float64" else torch.float32
    return model.to(dtype)


def _debug_kill() -> None:
    # test hooks (PETMD_DEBUG_KILL_AT_STEP=N, PETMD_DEBUG_KILL_IN_SAVE=N): a real SIGKILL at a chosen point, so the
    # resume tests exercise the real failure rather than a simulated one
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
