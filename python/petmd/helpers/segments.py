"""Long LAMMPS runs as a chain of segments that a killed run resumes where it stopped.

Each segment is one `lmp` call on the same input: the first starts from the input's own initial state (or from a
given restart file, e.g. the end of an equilibration), every later one from the restart file its predecessor wrote.
A segment writes its own log and dump and counts as done only once its restart file is in place and recorded in
``segments.json`` (written atomically); a segment cut short is run again from the last recorded restart, its partial
log and dump overwritten. Fixes that keep state in restart files (the CSVR thermostat's random numbers and the energy
it exchanged) continue as if the run had never stopped.

The input reads these variables (examples/liquid-water/nvt.lammps, examples/gas-phase/molecule.lammps):
``start`` (data | restart), ``restart_in``, ``restart_out``, ``dumpfile``, ``reset`` (yes: the step counter and time
restart at 0, for a run that continues another run's restart file with other settings) and ``steps``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import numpy as np

from ..atomic import atomic_output
from ..cpu import cpu_model
from ..errors import PetmdError
from ..observables.lammps_log import merge_thermo
from .lammps_run import read_thermo, run_lammps

STATE_FILE = "segments.json"
LOCK_FILE = ".lock"


class RunBusy(PetmdError):
    """Another process holds the run."""


@dataclass
class SegmentedRun:
    folder: Path
    input_file: Path
    variables: Mapping[str, object]  # -var values of every segment (steps, mode, model, ...)
    segments: int  # how many segments the run has in all (more than recorded extends a finished run)
    start_restart: Optional[Path] = None  # the first segment continues this restart file (None: the input's start)
    ranks: int = 1
    records: List[Dict[str, Any]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.records = self._read_state()

    @property
    def done(self) -> int:
        return len(self.records)

    @property
    def complete(self) -> bool:
        return self.done >= self.segments

    def name(self, k: int, suffix: str) -> str:
        return f"segment-{k:03d}.{suffix}"

    @property
    def logs(self) -> List[Path]:
        return [self.folder / self.name(k, "log") for k in range(self.done)]

    @property
    def dumps(self) -> List[Path]:
        return [self.folder / self.name(k, "dump") for k in range(self.done)]

    @property
    def last_restart(self) -> Optional[Path]:
        return self.folder / self.name(self.done - 1, "restart") if self.done else None

    @property
    def wall_s(self) -> float:
        return sum(float(record["wall_s"]) for record in self.records)

    def provenance(self) -> Dict[str, Any]:
        """When the recorded segments finished (first and last), on which CPUs (a segment recorded without its CPU
        adds none), and their wall seconds."""
        finished = [record["finished"] for record in self.records]
        return {
            "first_finished": finished[0] if finished else None,
            "last_finished": finished[-1] if finished else None,
            "cpus": sorted({record["cpu"] for record in self.records if "cpu" in record}),
            "wall_s": self.wall_s,
        }

    def thermo(self) -> Dict[str, np.ndarray]:
        """The thermo output of the recorded segments' runs as one table (the step a segment repeats from the end
        of the previous one counted once)."""
        if not self.done:
            raise PetmdError(f"{self.folder} has no finished segment yet")
        return merge_thermo([read_thermo(log)[-1] for log in self.logs])

    def _settings(self) -> Dict[str, str]:
        """What must not change between the segments of one run: the input and every variable."""
        settings = {key: str(value) for key, value in self.variables.items()}
        settings["input"] = str(Path(self.input_file).resolve())
        settings["start_restart"] = str(self.start_restart.resolve()) if self.start_restart else "none"
        return settings

    def _read_state(self) -> List[Dict[str, Any]]:
        path = self.folder / STATE_FILE
        if not path.exists():
            return []
        state = json.loads(path.read_text())
        recorded, wanted = state["settings"], self._settings()
        changed = sorted(key for key in set(recorded) | set(wanted) if recorded.get(key) != wanted.get(key))
        if changed:
            details = "; ".join(f"{key}: {recorded.get(key)} → {wanted.get(key)}" for key in changed)
            raise PetmdError(
                f"{self.folder} holds {len(state['segments'])} segments of a run with other settings ({details}): "
                "continue it with the same settings, or give another output folder for a new run"
            )
        return list(state["segments"])

    def _write_state(self) -> None:
        state = {"settings": self._settings(), "segments": self.records}
        with atomic_output(self.folder / STATE_FILE, "w") as fh:
            json.dump(state, fh, indent=1)

    def run(self, deadline: Optional[float] = None, max_segments: Optional[int] = None) -> bool:
        """Run the segments not yet recorded (at most ``max_segments`` of them), starting no new segment once
        time.monotonic() passes ``deadline``. Returns False when the deadline stopped it. Raises RunBusy when
        another process is running this run (two would overwrite each other's segments)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self.records = self._read_state()  # another process may have added segments since
            ran = 0
            while not self.complete and (max_segments is None or ran < max_segments):
                if deadline is not None and time.monotonic() > deadline:
                    return False
                self._run_segment(self.done)
                ran += 1
        return True

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """An exclusive lock on the run's folder for as long as this process runs it (released by the kernel if the
        process dies, so a killed run never stays locked)."""
        with open(self.folder / LOCK_FILE, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunBusy(f"{self.folder} is being run by another process; wait for it or stop it first") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _run_segment(self, k: int) -> None:
        restart_in = self.last_restart or self.start_restart
        if restart_in is not None and not restart_in.exists():
            raise PetmdError(f"{restart_in} is missing: segment {k} of {self.folder} cannot continue from it")
        part = self.folder / self.name(k, "restart.part")
        variables = dict(
            self.variables,
            start="restart" if restart_in else "data",
            restart_in=restart_in.resolve() if restart_in else "none",
            restart_out=part.name,
            dumpfile=self.name(k, "dump"),
            reset="yes" if k == 0 and self.start_restart else "no",
        )
        wall = run_lammps(self.input_file, self.folder, variables, self.ranks, log=self.name(k, "log"), quiet=True)
        if not part.exists():
            raise PetmdError(f"{self.input_file} did not write {part}: end it with `write_restart ${{restart_out}}`")
        os.replace(part, self.folder / self.name(k, "restart"))
        finished = time.strftime("%Y-%m-%d %H:%M:%S")
        self.records.append({"segment": k, "wall_s": wall, "finished": finished, "cpu": cpu_model()})
        self._write_state()
        if k >= 1:  # only the newest restart file is needed to go on
            (self.folder / self.name(k - 1, "restart")).unlink(missing_ok=True)
