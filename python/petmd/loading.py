"""Opening a model for evaluation: an exported TorchScript file or a training checkpoint, behind the exported
interface (``ExportedPET``), for `petmd eval`, `petmd symmetry`, the ASE calculator and the benchmarks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from .batch import Batch, Frame
from .checkpoint import build_model, is_exported_model, load_checkpoint, model_from_checkpoint
from .errors import PetmdError
from .exported import FORMAT, FORMAT_VERSION, METADATA_FILE, OLDEST_FORMAT_VERSION, ExportedPET, build_metadata
from .model import PET


class LoadedModel:
    """An exported file or a checkpoint, with its metadata, behind the exported interface."""

    def __init__(self, module: Any, metadata: dict, source: str, exported: bool = True):
        # an ExportedPET, or its TorchScript compilation: the same methods, which the type checker cannot see
        self.module = module
        self.metadata = metadata
        self.source = source
        self.exported = exported  # an exported file, else a checkpoint
        self.atomic_numbers = list(metadata["atomic_numbers"])
        self.cutoff = float(metadata["cutoff"])

    @property
    def symmetrize(self) -> str:
        """The mode forward runs in (none, random, grid:G, ecse)."""
        return str(getattr(self.module, "symmetrize", "none"))

    def set_symmetrization(self, mode: str) -> None:
        self._run_setter(self.module.set_symmetrization, mode)

    def set_chunk_atoms(self, n: int) -> None:
        self._run_setter(self.module.set_chunk_atoms, n)

    @property
    def has_uncertainty(self) -> bool:
        return self.metadata.get("uncertainty") is not None

    def require_uncertainty(self, who: str) -> None:
        """Raises a PetmdError that names the fix when this model has no uncertainty calibration."""
        if self.has_uncertainty:
            return
        if self.exported:
            version = self.metadata.get("format_version")
            raise PetmdError(
                f"{who}: {self.source} (model format version {version}) has no uncertainty calibration: export its "
                f"checkpoint with `petmd export CHECKPOINT -o MODEL.pt --uncertainty`, or re-export this file with "
                f"`petmd export {self.source} -o MODEL.pt --uncertainty --data TRAINING.xyz --validation-data "
                "VALIDATION.xyz`"
            )
        raise PetmdError(
            f"{who}: {self.source} is a training checkpoint, which carries no uncertainty calibration: export it with "
            f"`petmd export {self.source} -o MODEL.pt --uncertainty` and use MODEL.pt"
        )

    def set_uncertainty(self, on: bool) -> None:
        if on:
            self.require_uncertainty("uncertainty")
        self._run_setter(self.module.set_uncertainty, on)

    @staticmethod
    def _run_setter(method, value) -> None:
        """A run-time setting method of the module; its refusal (which says what is wrong) as a PetmdError."""
        try:
            method(value)
        except Exception as err:  # torch.jit.Error from TorchScript, RuntimeError in Python
            raise PetmdError(str(err).strip().splitlines()[-1].replace("builtins.RuntimeError: ", "")) from None

    def __call__(self, frame: Frame) -> Dict[str, torch.Tensor]:
        """Energy, per-atom energies, forces and virial of one structure through the exported forward."""
        n = frame.n_atoms
        with _plain_interpreter():
            return self.module(
                torch.from_numpy(frame.positions),
                torch.from_numpy(frame.numbers),
                torch.from_numpy(frame.cell),
                torch.from_numpy(frame.edge_index),
                torch.from_numpy(frame.cell_shifts),
                torch.ones(n, dtype=torch.bool),
            )

    def each(self, frames: Sequence[Frame]) -> Dict[str, torch.Tensor]:
        """The exported forward on each structure in turn (the only way for the modes whose forward has no batched
        form), laid out as a batched call's output: energy (n_structures,), forces (atoms, 3), virial (n, 3, 3)."""
        outs = [self(frame) for frame in frames]
        return {
            "energy": torch.stack([out["energy"].detach().reshape(()) for out in outs]),
            "forces": torch.cat([out["forces"].detach() for out in outs]),
            "virial": torch.stack([out["virial"].detach().reshape(3, 3) for out in outs]),
        }

    def batched(
        self, batch: Batch, compute_virial: bool = False, with_uncertainty: bool = False
    ) -> Dict[str, torch.Tensor]:
        """The network on a batch of structures (ExportedPET.batched); ``with_uncertainty`` adds energy_uncertainty
        and atom_extrapolation (refused, naming the fix, for a model without a calibration)."""
        args = [
            batch.positions,
            batch.numbers,
            batch.edge_index,
            batch.shift_vectors,
            batch.reverse,
            batch.structure,
            batch.n_structures,
            compute_virial,
        ]
        if with_uncertainty:  # only then: files of format version 3 have no such argument
            self.require_uncertainty("uncertainty")
            args.append(True)
        with _plain_interpreter():
            return self.module.batched(*args)


def _plain_interpreter():
    """TorchScript's profiling executor re-specialises on every new input shape (every structure, every MD step) and
    its optimised graphs run slower than the plain interpreter (docs/benchmarks.md); the C++ bridge runs the same way
    (cpp/model.cpp)."""
    return torch.jit.optimized_execution(False)


def load_model(path: str | Path) -> LoadedModel:
    """The model in ``path``, an exported file (`petmd export`) or a training checkpoint, ready to evaluate."""
    path = _existing(path)
    if is_exported_model(path):
        module, metadata = _read_exported(path)
        version = metadata.get("format_version")
        if not isinstance(version, int) or not OLDEST_FORMAT_VERSION <= version <= FORMAT_VERSION:
            raise PetmdError(format_version_problem(path, version))
        return LoadedModel(module, metadata, str(path))
    weights = _checkpoint_weights(path)
    return LoadedModel(ExportedPET(weights.pet.eval()), weights.metadata(), str(path), exported=False)


def format_version_problem(path: Path, version) -> str:
    """What is wrong with an exported file of another format version, and what to do (the C++ bridge says the same
    in its words)."""
    if isinstance(version, int) and version < OLDEST_FORMAT_VERSION:
        return (
            f"{path} has model format version {version}, which this petmd no longer runs (it reads versions "
            f"{OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}): re-export it with `petmd export {path} -o NEW.pt` (or from "
            "its checkpoint)"
        )
    return (
        f"{path} has model format version {version}, newer than this petmd reads ({FORMAT_VERSION}): use the petmd "
        "that exported it"
    )


@dataclass
class Weights:
    """A trained PET and what its exported metadata records about it."""

    pet: PET
    config: dict  # the config it was trained with; at least its "model" section
    dtype: str  # the precision it was trained or exported in
    training: dict = field(default_factory=dict)  # epochs, source file, last validation
    # an exported file's uncertainty: its metrics [D, D] (ExportedPET's) and metadata entry
    uncertainty_metric: Optional[torch.Tensor] = None
    extrapolation_metric: Optional[torch.Tensor] = None
    uncertainty: Optional[dict] = None

    def metadata(self, dtype: Optional[str] = None, symmetrize: str = "none") -> dict:
        extra = {"training": self.training, "uncertainty": self.uncertainty}
        return build_metadata(self.pet, self.config, dtype or self.dtype, extra, symmetrize)


def load_weights(path: str | Path) -> Weights:
    """The weights in ``path``: a training checkpoint, or an exported file of any format version (re-exporting one
    upgrades it)."""
    path = _existing(path)
    if not is_exported_model(path):
        return _checkpoint_weights(path)
    module, metadata = _read_exported(path)
    try:
        pet = build_model(
            metadata["hyperparameters"], metadata["atomic_numbers"], module.pet.state_dict(), metadata["dtype"]
        )
    except (KeyError, TypeError, RuntimeError, AttributeError) as err:
        raise PetmdError(f"{path}: cannot read its weights ({type(err).__name__}: {err})") from None
    training = dict(metadata.get("training") or {}, exported_file=path.name)
    weights = Weights(pet, {"model": metadata["hyperparameters"]}, metadata["dtype"], training)
    if metadata.get("uncertainty") is not None:
        weights.uncertainty_metric = module.uncertainty_metric.detach().clone()
        weights.extrapolation_metric = module.extrapolation_metric.detach().clone()
        weights.uncertainty = metadata["uncertainty"]
    return weights


def _checkpoint_weights(path: Path) -> Weights:
    state = load_checkpoint(path)
    history = state["history"]
    training: Dict[str, Any] = {"epochs": state["epoch"], "checkpoint": path.name}
    if history:
        training["last_validation"] = {k: v for k, v in history[-1].items() if k.startswith("val_")}
    dtype = state["config"]["training"]["dtype"]
    return Weights(model_from_checkpoint(state, str(path)), state["config"], dtype, training)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise PetmdError(f"model file {path} does not exist")
    return path


def _read_exported(path: Path) -> Tuple[Any, dict]:
    """The TorchScript module and metadata of a petmd file of any format version."""
    extra = {METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as err:
        raise PetmdError(
            f"{path}: cannot load the TorchScript file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    if not extra[METADATA_FILE]:
        raise PetmdError(f"{path} is a TorchScript file but not a petmd model (no {METADATA_FILE} metadata)")
    metadata = json.loads(extra[METADATA_FILE])
    if metadata.get("format") != FORMAT:
        raise PetmdError(f"{path} is not a petmd model (format {metadata.get('format')!r})")
    return module, metadata
