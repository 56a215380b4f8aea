"""Configuration: model hyper-parameters and training settings, read strictly from YAML.

Every section is a dataclass; an unknown key is an error that names the key and lists the valid ones, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import PetmdError
from .precision import DTYPE_NAMES


@dataclass
class ModelConfig:
    """PET's hyper-parameters: the one source of their defaults (petmd.model.PET is built from this)."""

    cutoff: float = 4.0
    """R_c (Å): atoms closer than this are neighbours; one message-passing layer sees this far."""
    cutoff_width: float = 0.2
    """Δ (Å): the cutoff function falls smoothly from 1 to 0 over (R_c − Δ, R_c)."""
    d_model: int = 128
    """Width of every token (edge and central) and of the messages passed between layers."""
    n_heads: int = 4
    """Attention heads of the per-atom transformer; d_model must be divisible by it."""
    d_ff: int = 512
    """Hidden width of the transformer's feed-forward network."""
    n_gnn_layers: int = 4
    """Message-passing layers: the interaction range is n_gnn_layers × R_c."""
    n_transformer_layers: int = 2
    """Transformer layers inside each message-passing layer."""
    head_hidden: int = 128
    """Hidden width of the energy heads (central and bond)."""
    neighbor_species_every_layer: bool = True
    """Concatenate the neighbour-species embedding into the edge token at every layer, not only the first."""


@dataclass
class DataConfig:
    path: str = ""  # empty: $PETMD_DATA, else ../shared/data/water-scan/water-scan.extxyz.gz
    energy_key: str = "energy"
    forces_key: str = "forces"
    # optional stress labels (frames without them are simply not in the stress term): ASE's stress σ (eV/Å³, the
    # extxyz `stress` of atoms.info or a calculator, Voigt 6 or 3×3), or a virial W = −V σ (eV, 9 or Voigt 6)
    stress_key: str = "stress"
    virial_key: str = "virial"
    # optional: read every k-th frame / at most n frames (after the stride), for quick runs
    stride: int = 1
    max_frames: int | None = None
    # validation split: either an explicit list of frame indices (after stride/max_frames), or a fraction + seed
    validation_fraction: float = 0.1
    validation_indices: list[int] | None = None
    split_seed: int = 0


@dataclass
class TrainingConfig:
    seed: int = 0
    epochs: int = 100
    atoms_per_batch: int = 1000
    optimizer: str = "adamw"  # adam | adamw
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    schedule: str = "cosine"  # cosine | step | constant
    step_decay_every: int = 1000  # steps, for schedule: step
    step_decay_factor: float = 0.5
    min_lr_ratio: float = 0.02  # cosine floor, as a fraction of learning_rate
    grad_clip: float = 10.0  # gradient-norm clipping (0: off); norms of 1–10 are normal early in training
    # exponential moving average of the weights after each step (0: off); validation, best.ckpt, export and --init
    # use the averaged weights, which swing less from step to step than the optimizer's; 0.99 averages ~100 steps
    ema_decay: float = 0.0
    # loss = energy_weight·MSE(E/atom) + force_weight·MSE(F), both in units of σ_F² (the force RMS of the data).
    # The original PET's w_E·MSE_E/σ_E² is energy_weight = w_E·σ_F²/σ_E²: for the SCAN water set (σ_E 12.7 meV/atom,
    # σ_F 0.76 eV/Å) its w_E 0.01-0.1 is 36-360. From scratch that stalls the forces: start at 1 and raise it in a
    # later stage (models/README.md has the shipped models' stages)
    energy_weight: float = 1.0
    force_weight: float = 1.0
    # + stress_weight·MSE(W/atom): the (symmetrized) virial per atom of the labelled structures, in σ_F² like the
    # energy per atom; W/atom = −σ·V/N, so 1 meV/atom is 0.016 GPa at water's 10 Å³ per atom
    stress_weight: float = 0.0
    augment_rotations: bool = True
    augment_inversion: bool = True
    # rotational-variance penalty (Langer et al. 2024): each structure of a step is seen in variance_copies randomly
    # rotated copies, and loss += variance_weight·(variance over the copies of E/atom and of the back-rotated forces),
    # in the same σ_F² units; atoms_per_batch then counts the atoms of all copies
    variance_copies: int = 1
    variance_weight: float = 0.0
    checkpoint_every_s: float = 600.0  # mid-epoch checkpoint interval, seconds
    validation_atoms_per_batch: int = 4000
    num_threads: int | None = None
    dtype: str = "float32"
    # the gradient of each step in chunks of this many atoms with recomputation (model/training_gradient.py):
    # memory bounded by the chunk instead of growing with every atom of the batch; 0 = plain double backward; -1 = the
    # device's default
    chunk_atoms: int = -1
    device: str = "cpu"  # cpu | cuda | cuda:N
    # TF32 matrix products on a CUDA device (10-bit mantissa products, float32 sums): the weights, optimizer and
    # loss stay float32; only with a cuda device, where it is a speed setting that changes the gradient's round-off
    tf32: bool = False


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _section(cls, values: Any, where: str):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise PetmdError(f"config section '{where}' must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise PetmdError(f"unknown config key '{where}.{key}'; valid keys in '{where}': {', '.join(sorted(names))}")
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    return cls(**{key: _coerce(value, types[key], f"{where}.{key}") for key, value in values.items()})


def _coerce(value: Any, type_name: str, key: str) -> Any:
    """Check a YAML value against the field's type; numbers written as strings (YAML 1.1 reads 1e-3 as a string)
    are converted."""
    if value is None:
        if "None" in type_name:
            return None
        raise PetmdError(f"config key '{key}' must not be empty")
    base = type_name.split("|")[0].strip()
    try:
        if base == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if base == "float" and not isinstance(value, bool):
            return float(value)
        if base == "int" and not isinstance(value, bool):
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError
            return int(as_float)
        if base == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
        if base.startswith("list"):
            if not isinstance(value, list):
                raise ValueError
            return [int(v) for v in value]
    except (TypeError, ValueError):
        raise PetmdError(f"config key '{key}' must be of type {type_name}, got {value!r}") from None
    return value


def config_from_dict(values: dict | None, source: str = "config") -> Config:
    values = values or {}
    if not isinstance(values, dict):
        raise PetmdError(f"{source}: the top level must be a mapping with sections model, data, training")
    sections = {"model": ModelConfig, "data": DataConfig, "training": TrainingConfig}
    for key in values:
        if key not in sections:
            raise PetmdError(f"{source}: unknown config key '{key}'; valid top-level keys: {', '.join(sections)}")
    try:
        cfg = Config(**{k: _section(cls, values.get(k), k) for k, cls in sections.items()})
    except PetmdError as err:
        raise PetmdError(f"{source}: {err}") from None
    _validate(cfg, source)
    return cfg


# The range of every numeric key: (section.key, lowest allowed, whether the lowest itself is allowed, what the key
# means there). None values (max_frames, num_threads) mean "not set" and are not checked.
RANGES = [
    ("model.cutoff", 0.0, False, "Å"),
    ("model.d_model", 1, True, "token width"),
    ("model.n_heads", 1, True, "attention heads"),
    ("model.d_ff", 1, True, "hidden width"),
    ("model.n_gnn_layers", 1, True, "message-passing layers"),
    ("model.n_transformer_layers", 1, True, "transformer layers"),
    ("model.head_hidden", 1, True, "hidden width"),
    ("data.stride", 1, True, "every k-th frame"),
    ("data.max_frames", 1, True, "frames"),
    ("training.epochs", 1, True, "epochs"),
    ("training.atoms_per_batch", 1, True, "atoms"),
    ("training.validation_atoms_per_batch", 1, True, "atoms"),
    ("training.learning_rate", 0.0, True, "the peak learning rate; 0 keeps the weights as they start"),
    ("training.weight_decay", 0.0, True, "0: none"),
    ("training.warmup_steps", 0, True, "steps"),
    ("training.step_decay_every", 1, True, "steps"),
    ("training.step_decay_factor", 0.0, False, "a factor in (0, 1]"),
    ("training.min_lr_ratio", 0.0, True, "a fraction of learning_rate"),
    ("training.grad_clip", 0.0, True, "0: off"),
    ("training.energy_weight", 0.0, True, "a loss weight"),
    ("training.force_weight", 0.0, True, "a loss weight"),
    ("training.stress_weight", 0.0, True, "a loss weight"),
    ("training.checkpoint_every_s", 0.0, True, "seconds"),
    ("training.num_threads", 1, True, "threads"),
]


def _check_ranges(cfg: Config, source: str) -> None:
    for name, lowest, inclusive, meaning in RANGES:
        section, key = name.split(".")
        value = getattr(getattr(cfg, section), key)
        if value is None or (value >= lowest if inclusive else value > lowest):
            continue
        bound = f"at least {lowest}" if inclusive else f"greater than {lowest}"
        raise PetmdError(f"{source}: {name} must be {bound} ({meaning}), got {value!r}")


def _validate(cfg: Config, source: str) -> None:
    _check_ranges(cfg, source)
    m, t = cfg.model, cfg.training
    if t.step_decay_factor > 1.0 or t.min_lr_ratio > 1.0:
        raise PetmdError(
            f"{source}: training.step_decay_factor and training.min_lr_ratio must be at most 1 (they lower the "
            f"learning rate), got {t.step_decay_factor} and {t.min_lr_ratio}"
        )
    if t.energy_weight == 0 and t.force_weight == 0 and t.stress_weight == 0:
        raise PetmdError(f"{source}: training.energy_weight, force_weight and stress_weight are all 0: nothing to fit")
    if m.cutoff_width <= 0 or m.cutoff_width >= m.cutoff:
        raise PetmdError(f"{source}: model.cutoff_width must be in (0, cutoff)")
    if m.d_model % m.n_heads:
        raise PetmdError(f"{source}: model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})")
    if t.dtype not in DTYPE_NAMES:
        raise PetmdError(f"{source}: training.dtype must be {' or '.join(DTYPE_NAMES)}, got '{t.dtype}'")
    if t.schedule not in ("cosine", "step", "constant"):
        raise PetmdError(f"{source}: training.schedule must be cosine, step or constant, got '{t.schedule}'")
    if t.optimizer not in ("adam", "adamw"):
        raise PetmdError(f"{source}: training.optimizer must be adam or adamw, got '{t.optimizer}'")
    if t.variance_copies < 1:
        raise PetmdError(f"{source}: training.variance_copies must be at least 1, got {t.variance_copies}")
    if t.chunk_atoms < -1:
        raise PetmdError(
            f"{source}: training.chunk_atoms must be a number of atoms, 0 (no chunks) or -1 (the "
            f"device's default), got {t.chunk_atoms}"
        )
    if t.variance_weight < 0:
        raise PetmdError(f"{source}: training.variance_weight must not be negative, got {t.variance_weight}")
    if t.variance_weight > 0 and (t.variance_copies < 2 or not t.augment_rotations):
        raise PetmdError(
            f"{source}: training.variance_weight > 0 needs training.variance_copies >= 2 and "
            "augment_rotations: true (the penalty compares differently rotated copies)"
        )
    if not 0.0 <= t.ema_decay < 1.0:
        raise PetmdError(
            f"{source}: training.ema_decay must be in [0, 1) (0: no averaging; 0.99 averages about 100 "
            f"steps), got {t.ema_decay}"
        )
    if not 0.0 <= cfg.data.validation_fraction < 1.0:
        raise PetmdError(f"{source}: data.validation_fraction must be in [0, 1)")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise PetmdError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PetmdError(f"{path}: not valid YAML{where}: {problem}") from None
    cfg = config_from_dict(values, str(path))
    if cfg.data.path and not Path(cfg.data.path).is_absolute():
        # data paths in a config are relative to the config file, so a config travels with its data
        cfg.data.path = str((path.parent / cfg.data.path).resolve())
    return cfg
