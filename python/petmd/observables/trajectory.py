"""The inputs of `petmd observables`: trajectory files (LAMMPS dumps, extxyz, ASE .traj — consecutive parts of one
run, in the order given) and LAMMPS logs (thermo output, timestep, targets, type→element map)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np

from ..errors import PetmdError
from .frames import TrajectoryFrame
from .lammps_dump import is_lammps_dump, read_lammps_dump
from .lammps_log import LammpsLog, is_lammps_log, read_lammps_log


@dataclass
class Inputs:
    trajectories: List[Path] = field(default_factory=list)
    logs: List[LammpsLog] = field(default_factory=list)

    @property
    def log(self) -> Optional[LammpsLog]:
        """The last log (a run continued over several logs: the last one holds the targets in force)."""
        return self.logs[-1] if self.logs else None


def classify(paths: Sequence[str]) -> Inputs:
    inputs = Inputs()
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise PetmdError(f"{path} does not exist")
        if path.is_dir():
            raise PetmdError(f"{path} is a directory: give the trajectory and log files themselves")
        if is_lammps_log(path):
            inputs.logs.append(read_lammps_log(path))
        else:
            inputs.trajectories.append(path)
    if not inputs.trajectories and not inputs.logs:
        raise PetmdError("no input files")
    return inputs


def _ase_frames(path: Path, timestep: Optional[float], frame_interval: Optional[float]) -> Iterator[TrajectoryFrame]:
    import ase.io
    import ase.units

    try:
        reader = ase.io.iread(str(path), index=":")
        for k, atoms in enumerate(reader):
            info = atoms.info
            step = int(info["step"]) if "step" in info else None
            time: Optional[float]
            if "time" in info:
                time = float(info["time"])  # ps
            elif step is not None and timestep:
                time = step * timestep
            else:
                time = k * frame_interval if frame_interval else None
            velocities = atoms.get_velocities() if atoms.has("momenta") else None
            forces = energy = None
            if atoms.calc is not None:
                results = atoms.calc.results
                forces = results.get("forces")
                energy = results.get("energy")
            if velocities is not None:
                velocities = velocities * 1000.0 * ase.units.fs  # ASE's Å per time unit → Å/ps
            yield TrajectoryFrame(
                source=f"{path}, frame {k}",
                step=step,
                time=time,
                symbols=np.array(atoms.get_chemical_symbols()),
                positions=atoms.positions.astype(float),
                unwrapped=False,
                cell=atoms.cell.array.astype(float),
                pbc=atoms.pbc.copy(),
                velocities=velocities,
                forces=forces,
                energy=energy,
            )
    except PetmdError:
        raise
    except Exception as err:  # ASE raises many types on malformed input
        raise PetmdError(f"cannot read {path} with ASE: {type(err).__name__}: {err}") from None


def iter_frames(
    inputs: Inputs,
    types: Optional[Sequence[str]] = None,
    timestep: Optional[float] = None,
    frame_interval: Optional[float] = None,
) -> Iterator[TrajectoryFrame]:
    """All frames of all trajectory files in order; a frame repeating the previous one's step (a restarted run
    re-writes its first step) is dropped."""
    log = inputs.log
    if types is None and log is not None:
        types = log.type_elements
    if timestep is None and log is not None and log.timestep_set:
        timestep = log.timestep
    previous_step = None
    for path in inputs.trajectories:
        frames = (
            read_lammps_dump(path, types, timestep)
            if is_lammps_dump(path)
            else _ase_frames(path, timestep, frame_interval)
        )
        for frame in frames:
            if frame.step is not None and frame.step == previous_step:
                continue
            previous_step = frame.step
            yield frame


def estimated_frames(inputs: Inputs) -> Optional[int]:
    """The frame count of LAMMPS dumps estimated from the file sizes and the first frame (for the progress bar and the
    default lag range); None for other formats."""
    total = 0
    for path in inputs.trajectories:
        if not is_lammps_dump(path) or path.suffix == ".gz":
            return None
        with open(path) as f:
            head = [f.readline() for _ in range(4)]
            try:
                n_atoms = int(head[3])
            except (ValueError, IndexError):
                return None
            first = sum(len(line) for line in head) + sum(len(f.readline()) for _ in range(5 + n_atoms))
        total += max(1, round(os.path.getsize(path) / max(first, 1)))
    return total
