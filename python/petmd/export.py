"""`petmd export`: a trained model (a checkpoint, or an exported file of any format version) written as an exported
file of this petmd's format (petmd.exported), with its uncertainty calibration (petmd.uncertainty) on request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from .atomic import atomic_output
from .batch import Frame
from .data import load_frames, split_indices
from .errors import PetmdError
from .exported import METADATA_FILE, ExportedPET
from .loading import Weights, load_weights
from .precision import torch_dtype
from .uncertainty import calibrate


def export_checkpoint(
    source: str | Path,
    output: str | Path,
    dtype: str = "float32",
    symmetrize: str = "none",
    uncertainty: bool = False,
    data: Optional[str | Path] = None,
    validation_data: Optional[str | Path] = None,
    progress: bool = False,
) -> dict:
    """Writes ``source``'s weights to ``output`` in ``dtype`` with default mode ``symmetrize``, atomically; returns
    the metadata written. ``uncertainty``: calibrate the LLPR (calibration_frames says on which frames); else an
    exported source's calibration is kept."""
    output = Path(output)
    if output.is_dir():
        raise PetmdError(f"-o {output} is a directory: give the model file's path, e.g. {output / 'model.pt'}")
    weights = load_weights(source)
    pet = weights.pet.to(torch_dtype(dtype)).eval()
    if uncertainty:  # calibrated on the network as exported
        training, validation = calibration_frames(weights, source, data, validation_data, progress)
        calibration = calibrate(pet, training, validation, progress=progress)
        weights.uncertainty_metric = torch.from_numpy(calibration.metric)
        weights.extrapolation_metric = torch.from_numpy(calibration.extrapolation_metric)
        weights.uncertainty = calibration.metadata()
    elif data is not None or validation_data is not None:
        raise PetmdError("--data and --validation-data are the uncertainty calibration's frames: add --uncertainty")
    for p in pet.parameters():
        p.requires_grad_(False)
    try:
        wrapped = ExportedPET(pet, symmetrize, weights.uncertainty_metric, weights.extrapolation_metric).eval()
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


def calibration_frames(
    weights: Weights,
    source: str | Path,
    data: Optional[str | Path],
    validation_data: Optional[str | Path],
    progress: bool,
) -> Tuple[List[Frame], List[Frame]]:
    """The uncertainty calibration's (training, validation) frames: those of the checkpoint's training run (its
    data file, or ``data`` in its place, with the run's stride and split), the validation ones replaced by
    ``validation_data`` when given; an exported file's source needs both files."""
    for given, option in ((data, "--data"), (validation_data, "--validation-data")):
        if given is not None and not Path(given).exists():
            raise PetmdError(f"--uncertainty: {option} {given} does not exist")
    cutoff = weights.pet.cutoff
    run = weights.config.get("data")
    if run is None:
        if data is None or validation_data is None:
            raise PetmdError(
                f"--uncertainty: {source} is an exported file, which does not record its training data: give "
                "--data TRAINING.xyz and --validation-data VALIDATION.xyz (labelled frames the model was not trained "
                "on), or export from its checkpoint"
            )
        numbers = weights.pet.atomic_numbers
        return _frames(data, cutoff, numbers, progress), _frames(validation_data, cutoff, numbers, progress)
    path = data or run.get("path")
    if not path or not Path(path).exists():
        raise PetmdError(
            f"--uncertainty: the training data of {source} ({path}) is not there: give its file with --data"
        )
    keys = {"energy_key": run.get("energy_key", "energy"), "forces_key": run.get("forces_key", "forces")}
    frames = load_frames(
        path,
        cutoff,
        stride=run.get("stride", 1),
        max_frames=run.get("max_frames"),
        model_numbers=weights.pet.atomic_numbers,
        progress=progress,
        **keys,
    )
    fraction, seed = run["validation_fraction"], run["split_seed"]
    train, val = split_indices(len(frames), fraction, seed, run.get("validation_indices"))
    if validation_data is None:
        validation = [frames[i] for i in val]
    else:
        validation = _frames(validation_data, cutoff, weights.pet.atomic_numbers, progress)
    return [frames[i] for i in train], validation


def _frames(path: str | Path, cutoff: float, numbers: List[int], progress: bool) -> List[Frame]:
    return load_frames(path, cutoff, model_numbers=numbers, progress=progress)
