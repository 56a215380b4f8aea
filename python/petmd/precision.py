"""The network's floating-point precision by name, as configs, the CLI and exported metadata spell it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import PetmdError

if TYPE_CHECKING:
    import torch

# the names alone, without torch: the CLI offers them before it imports torch
DTYPE_NAMES = ("float32", "float64")


def torch_dtype(name: str) -> torch.dtype:
    """torch's dtype for ``float32`` or ``float64``; any other name is an error that lists both."""
    import torch

    if name not in DTYPE_NAMES:
        raise PetmdError(f"unknown precision '{name}': use {' or '.join(DTYPE_NAMES)}")
    return getattr(torch, name)
