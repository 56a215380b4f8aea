"""Shared fixtures: small synthetic water systems and small PET models with non-trivial weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from petmd.batch import frame_from_atoms
from petmd.config import ModelConfig
from petmd.data import default_data_path
from petmd.model import PET

CUTOFF = 4.0
# the stored old exported file (format_version 1): petmd refuses to run it and re-exports it (tests/models/README.md)
FORMAT_1_MODEL = Path(__file__).resolve().parent / "models" / "pet-water-tiny-f64-format1.pt"


def water_molecule(rng: np.random.Generator, center) -> np.ndarray:
    """O, H, H positions of a randomly oriented water molecule (r_OH 0.97 Å, HOH 104.5°)."""
    angle = np.deg2rad(104.5)
    local = np.array([[0.0, 0.0, 0.0], [0.97, 0.0, 0.0], [0.97 * np.cos(angle), 0.97 * np.sin(angle), 0.0]])
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return local @ q.T + center


def water_box(
    n_side: int = 2, spacing: float = 3.1, seed: int = 0, jitter: float = 0.15, cell_tilt: float = 0.0
) -> Atoms:
    """n_side³ water molecules on a jittered cubic grid in a periodic (optionally triclinic) cell."""
    rng = np.random.default_rng(seed)
    length = n_side * spacing
    cell = np.diag([length, length, length]).astype(float)
    cell[1, 0] = cell_tilt
    cell[2, 0] = 0.5 * cell_tilt
    positions, numbers = [], []
    for idx in np.ndindex(n_side, n_side, n_side):
        frac = (np.array(idx) + 0.5) / n_side
        center = frac @ cell + rng.normal(0, jitter, 3)
        positions.append(water_molecule(rng, center))
        numbers += [8, 1, 1]
    return Atoms(numbers=numbers, positions=np.concatenate(positions), cell=cell, pbc=True)


def rotated(atoms: Atoms, q: np.ndarray) -> Atoms:
    """``atoms`` with positions and cell rotated by the 3×3 matrix q (x → q x)."""
    out = atoms.copy()
    out.positions = atoms.positions @ q.T
    out.cell = atoms.cell.array @ q.T
    return out


def small_pet(seed: int = 0, dtype=torch.float64, n_gnn_layers: int = 2, d_model: int = 16) -> PET:
    """A small PET with random weights everywhere, heads included (training starts them at zero)."""
    torch.manual_seed(seed)
    config = ModelConfig(
        cutoff=CUTOFF,
        cutoff_width=0.5,
        d_model=d_model,
        n_heads=2,
        d_ff=2 * d_model,
        n_gnn_layers=n_gnn_layers,
        n_transformer_layers=1,
        head_hidden=16,
    )
    model = PET([1, 8], config)
    with torch.no_grad():
        for layer in model.layers:
            for head in (layer.central_head, layer.bond_head):
                head.net[-1].weight.normal_(0.0, 0.3)
                head.net[-1].bias.normal_(0.0, 0.3)
        model.composition_energies.copy_(torch.tensor([-13.6, -430.0], dtype=torch.float64))
        model.energy_scale.fill_(0.7)
    return model.to(dtype)


def frame(atoms, energy=None, forces=None):
    return frame_from_atoms(atoms, CUTOFF, energy=energy, forces=forces)


@pytest.fixture(scope="session")
def scan_data_path() -> Path:
    path = default_data_path()
    if not path.exists():
        pytest.fail(f"SCAN water data not found at {path}: set PETMD_DATA or put ../shared beside the checkout")
    return path


def run_petmd(*args, cwd=None, env=None, check=False) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "petmd", *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(f"petmd {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def with_metadata(model_path, output, **changes) -> Path:
    """A copy of an exported model whose petmd.json metadata has ``changes`` applied (e.g. format_version=2)."""
    import json
    import zipfile

    with zipfile.ZipFile(model_path) as src, zipfile.ZipFile(output, "w") as dst:
        for item in src.infolist():
            blob = src.read(item)
            if item.filename.endswith("extra/petmd.json"):
                blob = json.dumps({**json.loads(blob), **changes}).encode()
            dst.writestr(item, blob)
    return Path(output)


def write_checkpoint(path, model: PET, dtype: str = "float64") -> Path:
    """A weights-only petmd checkpoint of ``model``, as `petmd export --weights-checkpoint` writes one (no training
    history)."""
    from petmd.checkpoint import save_checkpoint
    from petmd.config import Config, ModelConfig

    cfg = Config(
        model=ModelConfig(
            cutoff=model.cutoff,
            cutoff_width=model.cutoff_width,
            d_model=model.neighbor_embedding.embedding_dim,
            n_heads=2,
            d_ff=2 * model.neighbor_embedding.embedding_dim,
            n_gnn_layers=model.n_gnn_layers,
            n_transformer_layers=1,
            head_hidden=16,
        )
    )
    cfg.training.dtype = dtype
    state = {
        "petmd_version": "test",
        "config": cfg.to_dict(),
        "atomic_numbers": model.atomic_numbers,
        "model_state": model.state_dict(),
        "sigma_e": 0.01,
        "sigma_f": float(model.energy_scale),
        "epoch": 0,
        "global_step": 0,
        "best_val_force_mae": float("inf"),
        "history": [],
        "elapsed_s": 0.0,
        "validation_indices": [],
        "initialized_from": None,
    }
    save_checkpoint(state, path)
    return Path(path)


TINY_MODEL = {
    "cutoff": 4.0,
    "cutoff_width": 0.5,
    "d_model": 16,
    "n_heads": 2,
    "d_ff": 32,
    "n_gnn_layers": 2,
    "n_transformer_layers": 1,
    "head_hidden": 16,
}


def write_labelled_data(path, n_frames: int = 8, seed: int = 0, missing=None) -> Path:
    """Small water boxes labelled by a Lennard-Jones potential, written as extxyz. ``missing`` = (frame, "energy"
    or "forces") leaves that label out of one frame."""
    import ase.io
    from ase.calculators.lj import LennardJones
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for k in range(n_frames):
        atoms = water_box(2, seed=seed + k, jitter=0.25)
        atoms.calc = LennardJones(sigma=2.2, epsilon=0.01, rc=4.0)
        energy, forces = atoms.get_potential_energy() - 150.0 * len(atoms), atoms.get_forces()
        atoms.calc = None
        atoms.info["config_type"] = f"group{k % 2}"
        if missing is not None and missing[0] == k:
            if missing[1] == "forces":
                atoms.info["energy"] = energy
            else:
                atoms.arrays["forces"] = forces
        else:
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    ase.io.write(str(path), frames, format="extxyz")
    return Path(path)


def write_config(path, data_path, **training) -> Path:
    import yaml

    train = {
        "epochs": 3,
        "atoms_per_batch": 48,
        "warmup_steps": 2,
        "learning_rate": 1e-3,
        "checkpoint_every_s": 0,
        "dtype": "float64",
        "num_threads": 1,
        "seed": 1,
    }
    train.update(training)
    cfg = {"model": TINY_MODEL, "data": {"path": str(data_path), "validation_fraction": 0.25}, "training": train}
    Path(path).write_text(yaml.safe_dump(cfg))
    return Path(path)
