"""`petmd export`: a trained model (a checkpoint, or an exported file of any format version) written as an exported
file of this petmd's format (petmd.exported)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .atomic import atomic_output
from .errors import PetmdError
from .exported import METADATA_FILE, ExportedPET
from .loading import load_weights
from .precision import torch_dtype


def export_checkpoint(source: str | Path, output: str | Path, dtype: str = "float32", symmetrize: str = "none") -> dict:
    """Writes ``source``'s weights to ``output`` in ``dtype`` with default mode ``symmetrize``, atomically; returns
    the metadata written."""
    output = Path(output)
    if output.is_dir():
        raise PetmdError(f"-o {output} is a directory: give the model file's path, e.g. {output / 'model.pt'}")
    weights = load_weights(source)
    pet = weights.pet.to(torch_dtype(dtype)).eval()
    for p in pet.parameters():
        p.requires_grad_(False)
    try:
        wrapped = ExportedPET(pet, symmetrize).eval()
    except RuntimeError as err:
        raise PetmdError(f"--symmetrize: {err}") from None
    metadata = weights.metadata(dtype, symmetrize)
    try:
        scripted = torch.jit.script(wrapped)
    except Exception as err:  # a TorchScript failure is a petmd bug, but say where it came from
        raise PetmdError(f"TorchScript compilation of the model failed: {err}") from None
    with atomic_output(output) as fh:
        torch.jit.save(scripted, fh, _extra_files={METADATA_FILE: json.dumps(metadata)})
    return metadata
