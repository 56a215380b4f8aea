"""Reading labelled structures (extxyz and anything ASE reads), checking them, and splitting them."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from ase.data import chemical_symbols
from tqdm import tqdm

from .batch import Frame, frame_from_atoms
from .errors import PetmdError

INFO_GROUP_KEYS = ("config_type", "phase")


def default_data_path() -> Path:
    """The SCAN water/ice set: $PETMD_DATA, else ../shared/data/water-scan next to the checkout."""
    env = os.environ.get("PETMD_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data" / "water-scan" / "water-scan.extxyz.gz"
        if candidate.exists():
            return candidate
    return Path.cwd().parent / "shared" / "data" / "water-scan" / "water-scan.extxyz.gz"


def read_structures(path: str | Path, index: str = ":"):
    """All structures of a file as ASE Atoms, with a clear error for a missing, empty or unreadable file."""
    import ase.io

    path = _check_path(path)
    try:
        source, fmt = _readable(path)
        structures = ase.io.read(source, index=index, format=fmt)
    except Exception as err:  # ASE raises many types for malformed input
        raise unreadable(path, err) from None
    if not isinstance(structures, list):
        structures = [structures]
    if not structures:
        raise PetmdError(f"data file {path} holds no structures")
    return structures


def find_structure(path: str | Path, n_atoms: Optional[int] = None, **info):
    """The first structure of a file with ``n_atoms`` atoms whose ``atoms.info`` matches ``info`` (e.g.
    ``config_type="multithermal"``), reading only as far as needed."""
    for atoms in iter_structures(path, n_atoms, **info):
        return atoms
    raise no_structure(path, n_atoms, **info)


def no_structure(path: str | Path, n_atoms: Optional[int] = None, **info) -> PetmdError:
    """The error for a file without a structure of ``n_atoms`` atoms whose ``atoms.info`` matches ``info``."""
    wanted = ", ".join([f"{n_atoms} atoms"] * (n_atoms is not None) + [f"{k}={v!r}" for k, v in info.items()])
    return PetmdError(f"no structure in {path} has {wanted}")


def iter_structures(path: str | Path, n_atoms: Optional[int] = None, **info) -> Iterator:
    """The structures of a file with ``n_atoms`` atoms whose ``atoms.info`` matches ``info``, read one at a time."""
    import ase.io

    source, fmt = _readable(_check_path(path))
    try:
        for atoms in ase.io.iread(source, index=":", format=fmt):
            if (n_atoms is None or len(atoms) == n_atoms) and all(atoms.info.get(k) == v for k, v in info.items()):
                yield atoms
    except Exception as err:  # ASE raises many types for malformed input
        raise unreadable(path, err) from None


def _check_path(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise PetmdError(f"data file {path} does not exist")
    if path.is_dir():
        raise PetmdError(f"data path {path} is a directory; give an extxyz file")
    if path.stat().st_size == 0:
        raise PetmdError(f"data file {path} is empty")
    return path


def unreadable(path: str | Path, err: Exception) -> PetmdError:
    """What ASE's failure to read ``path`` means, in one line."""
    if isinstance(err, KeyError) and isinstance(err.args[0] if err.args else None, str):
        # ASE looks chemical symbols up in its table: a KeyError is a symbol that is not an element
        return PetmdError(
            f"cannot read {path}: {err.args[0]!r} is not a chemical element symbol (a typo, or a label "
            "that is not an element?)"
        )
    return PetmdError(f"cannot read {path} as a structure file: {type(err).__name__}: {err}")


def _readable(path: Path):
    """(source, format or None) for ase.io.read. A compressed file is decompressed into memory first: ASE seeks
    backwards while indexing frames, which on a gzip stream restarts decompression each time (minutes instead of
    seconds)."""
    from ase.io.formats import filetype

    opener = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}.get(path.suffix)
    if opener is None:
        return str(path), None
    import importlib

    fmt = filetype(str(path), read=False)
    with importlib.import_module(opener).open(path, "rt") as fh:
        return io.StringIO(fh.read()), fmt


def _energy(atoms, key: str) -> Optional[float]:
    if key in atoms.info:
        return float(atoms.info[key])
    if key == "energy" and atoms.calc is not None:
        try:
            return float(atoms.get_potential_energy())
        except Exception:
            return None
    return None


def _forces(atoms, key: str) -> Optional[np.ndarray]:
    if key in atoms.arrays:
        return np.asarray(atoms.arrays[key], dtype=np.float64)
    if key == "forces" and atoms.calc is not None:
        try:
            return np.asarray(atoms.get_forces(), dtype=np.float64)
        except Exception:
            return None
    return None


def _voigt_or_full(value, what: str) -> np.ndarray:
    """A 3×3 tensor from 9 numbers (row by row) or Voigt's 6 (xx yy zz yz xz xy)."""
    from ase.stress import voigt_6_to_full_3x3_stress

    array = np.asarray(value, dtype=np.float64).ravel()
    if array.size == 9:
        return array.reshape(3, 3)
    if array.size == 6:
        return voigt_6_to_full_3x3_stress(array)
    raise ValueError(f"{what} has {array.size} numbers; expected 9 (3×3) or 6 (Voigt: xx yy zz yz xz xy)")


def virial_label(atoms, stress_key: str, virial_key: str) -> Optional[np.ndarray]:
    """The frame's virial W = −∂E/∂ε (eV) from its `virial_key` (W itself) or `stress_key` (ASE's σ = (1/V)∂E/∂ε
    in eV/Å³, W = −V σ) label, in atoms.info or from a calculator's stress; None if it has neither. A stress needs
    a periodic cell (its volume)."""
    if virial_key in atoms.info:
        return _voigt_or_full(atoms.info[virial_key], f"'{virial_key}'")
    stress = atoms.info.get(stress_key)
    if stress is None and stress_key == "stress" and atoms.calc is not None and "stress" in atoms.calc.results:
        stress = atoms.calc.results["stress"]
    if stress is None:
        return None
    if not atoms.pbc.all():
        raise ValueError(f"'{stress_key}' needs a cell periodic in x, y and z (a volume); give a virial instead")
    return -atoms.get_volume() * _voigt_or_full(stress, f"'{stress_key}'")


def labels(
    structures, path, energy_key: str, forces_key: str, frame_numbers: Optional[Sequence[int]] = None
) -> Tuple[List[float], List[np.ndarray]]:
    energies, forces = [], []
    for n, atoms in enumerate(structures):
        k = frame_numbers[n] if frame_numbers is not None else n
        e = _energy(atoms, energy_key)
        if e is None:
            raise PetmdError(f"{path}: frame {k} has no energy under key '{energy_key}' (set data.energy_key)")
        f = _forces(atoms, forces_key)
        if f is None:
            raise PetmdError(f"{path}: frame {k} has no forces under key '{forces_key}' (set data.forces_key)")
        if f.shape != (len(atoms), 3):
            raise PetmdError(f"{path}: frame {k} has forces of shape {f.shape}, expected ({len(atoms)}, 3)")
        if not np.isfinite(e) or not np.isfinite(f).all():
            raise PetmdError(f"{path}: frame {k} has a non-finite energy or force")
        energies.append(e)
        forces.append(f)
    return energies, forces


def check_species(numbers: Sequence[int], model_numbers: Sequence[int], where: str) -> None:
    unknown = sorted(set(int(z) for z in numbers) - set(int(z) for z in model_numbers))
    if unknown:
        names = ", ".join(element_symbol(z) for z in unknown)
        known = ", ".join(element_symbol(z) for z in model_numbers)
        raise PetmdError(f"{where}: element {names} is not a species of the model (model species: {known})")


def element_symbol(z: int) -> str:
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def load_frames(
    path,
    cutoff: float,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stride: int = 1,
    max_frames: Optional[int] = None,
    model_numbers: Optional[Sequence[int]] = None,
    labelled: bool = True,
    progress: bool = True,
    indices: Optional[Sequence[int]] = None,
    stress_key: str = "stress",
    virial_key: str = "virial",
) -> List[Frame]:
    """Read, check and neighbour-list a data file. Frame k of the result is frame k·stride of the file, or
    frame indices[k] when ``indices`` (file frame numbers) are given."""
    structures = read_structures(path)
    if indices is None:
        indices = list(range(0, len(structures), stride))
    bad = [i for i in indices if not 0 <= i < len(structures)]
    if bad:
        raise PetmdError(f"{path}: frame index {bad[0]} out of range (the file has {len(structures)} frames)")
    if max_frames is not None:
        indices = indices[:max_frames]
    structures = [structures[i] for i in indices]
    energies: Sequence[Optional[float]]
    forces: Sequence[Optional[np.ndarray]]
    virials: List[Optional[np.ndarray]] = [None] * len(structures)
    if labelled:
        energies, forces = labels(structures, path, energy_key, forces_key, indices)
        for k, atoms in enumerate(structures):
            try:
                virial = virial_label(atoms, stress_key, virial_key)
            except ValueError as err:
                raise PetmdError(f"{path}: frame {indices[k]}: {err} (data.stress_key, data.virial_key)") from None
            if virial is not None and not np.isfinite(virial).all():
                raise PetmdError(f"{path}: frame {indices[k]} has a non-finite stress or virial")
            virials[k] = virial
    else:
        energies, forces = [None] * len(structures), [None] * len(structures)
    if model_numbers is not None:
        for k, atoms in enumerate(structures):
            check_species(atoms.numbers, model_numbers, f"{path}: frame {indices[k]}")
    frames = []
    for atoms, e, f, w in tqdm(
        list(zip(structures, energies, forces, virials)),
        desc="neighbour lists",
        unit="frame",
        disable=not progress,
        leave=False,
    ):
        info = {key: str(atoms.info[key]) for key in INFO_GROUP_KEYS if key in atoms.info}
        try:
            frames.append(frame_from_atoms(atoms, cutoff, energy=e, forces=f, info=info, virial=w))
        except PetmdError as err:
            raise PetmdError(f"{path}: frame {indices[len(frames)]}: {err}") from None
    return frames


def split_indices(
    n_frames: int, validation_fraction: float, seed: int, validation_indices: Optional[Sequence[int]] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """(train, validation) frame indices: an explicit validation list, or a seeded random fraction."""
    if validation_indices is not None:
        val = np.array(sorted(set(int(i) for i in validation_indices)), dtype=np.int64)
        if len(val) and (val.min() < 0 or val.max() >= n_frames):
            raise PetmdError(f"data.validation_indices must lie in 0..{n_frames - 1}")
    else:
        n_val = int(round(validation_fraction * n_frames))
        if validation_fraction > 0:
            n_val = max(1, n_val)
        val = np.sort(np.random.default_rng(seed).permutation(n_frames)[:n_val])
    train = np.setdiff1d(np.arange(n_frames), val)
    if len(train) == 0:
        raise PetmdError("no training frames left after the validation split")
    return train, val
