"""LAMMPS log files: thermo output of the MD runs (minimizations left out), and what the echoed input says about the
run: units, timestep, thermostat/barostat targets and the element of each atom type (pair_coeff * * O H, or a hybrid
sub-style's pair_coeff * * pet 1 O H)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..errors import PetmdError
from .lammps_dump import open_text

# the default timestep of each unit style, in that style's time unit; only metal is accepted below
_ELEMENTS = {
    "H",
    "He",
    "Li",
    "Be",
    "B",
    "C",
    "N",
    "O",
    "F",
    "Ne",
    "Na",
    "Mg",
    "Al",
    "Si",
    "P",
    "S",
    "Cl",
    "Ar",
    "K",
    "Ca",
}
_THERMOSTATS = ("nvt", "npt", "temp/csvr", "temp/berendsen", "temp/rescale", "langevin", "temp/csld", "nvt/sllod")


@dataclass
class ThermoBlock:
    """The thermo output of one `run` or `minimize` (kept even if the run was cut short: no 'Loop time' line)."""

    columns: Dict[str, np.ndarray]
    minimize: bool
    line: int  # where its header is


@dataclass
class LammpsLog:
    path: Path
    blocks: List[ThermoBlock] = field(default_factory=list)
    thermo: Dict[str, np.ndarray] = field(default_factory=dict)  # column → values over all MD runs, steps unique
    errors: List[str] = field(default_factory=list)  # lines where LAMMPS reported an ERROR
    timestep: float = 0.001  # ps (metal default)
    timestep_set: bool = False
    n_atoms: Optional[int] = None
    target_temperature: Optional[float] = None  # K, from the last thermostat fix
    target_pressure: Optional[float] = None  # bar, from the last barostat fix
    barostat: bool = False
    type_elements: Optional[List[str]] = None
    minimizations: int = 0
    # each finished run or minimize: {"wall_s", "steps", "procs", "cpu_fraction"} from its "Loop time of ..." and
    # "N% CPU use ..." lines (LAMMPS's CPU use: the process's CPU time over the wall time, None if not printed)
    loops: List[dict] = field(default_factory=list)

    def time(self) -> Optional[np.ndarray]:
        if "Time" in self.thermo:
            return self.thermo["Time"]
        if "Step" in self.thermo:
            return self.thermo["Step"] * self.timestep
        return None


def _fix_targets(log: LammpsLog, tokens: List[str]):
    style = tokens[3] if len(tokens) > 3 else ""
    try:
        if style in _THERMOSTATS[2:] and len(tokens) > 5:  # fix ID group style Tstart Tstop ...
            log.target_temperature = float(tokens[5])
        if "temp" in tokens[4:] and style in ("nvt", "npt", "nvt/sllod"):
            k = tokens.index("temp", 4)
            log.target_temperature = float(tokens[k + 2])
        if style in ("npt", "nph"):
            log.barostat = True
            for key in ("iso", "aniso", "tri", "x"):
                if key in tokens[4:]:
                    log.target_pressure = float(tokens[tokens.index(key, 4) + 2])
                    break
        if style in ("press/berendsen", "press/langevin"):
            log.barostat = True
    except (ValueError, IndexError):
        pass  # a fix line we do not understand: its targets stay unknown, which compare reports


def read_lammps_log(path) -> LammpsLog:
    path = Path(path)
    if not path.exists():
        raise PetmdError(f"log file {path} does not exist")
    log = LammpsLog(path=path)
    blocks: List[Dict[str, list]] = []
    kinds: List[tuple] = []
    header: Optional[List[str]] = None
    last_command = ""
    with open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if "ERROR" in line or "exited on signal" in line:
                log.errors.append(line.strip())
            tokens = line.split()
            if header is not None:
                if line.startswith("Loop time of"):
                    match = re.search(r"with (\d+) atoms", line)
                    if match:
                        log.n_atoms = int(match.group(1))
                    loop = re.match(r"Loop time of (\S+) on (\d+) procs for (\d+) steps", line)
                    if loop:
                        wall, procs, steps = float(loop.group(1)), int(loop.group(2)), int(loop.group(3))
                        log.loops.append({"wall_s": wall, "procs": procs, "steps": steps, "cpu_fraction": None})
                    header = None
                    continue
                if len(tokens) == len(header):
                    try:
                        values = [float(t) for t in tokens]
                    except ValueError:
                        continue  # WARNING lines and the like inside a run
                    for name, value in zip(header, values):
                        blocks[-1][name].append(value)
                continue
            cpu = re.match(r"([\d.]+)% CPU use with", line)
            if cpu and log.loops and log.loops[-1]["cpu_fraction"] is None:
                log.loops[-1]["cpu_fraction"] = float(cpu.group(1)) / 100
                continue
            if not tokens or tokens[0].startswith("#") or "$" in line:
                continue  # LAMMPS echoes each substitution of a variable: the line without $ is the one it ran
            command = tokens[0]
            if command == "Step" and len(tokens) > 1:
                header = tokens
                blocks.append({name: [] for name in header})
                kinds.append((last_command == "minimize", number))
                log.minimizations += last_command == "minimize"
                continue
            if command == "units" and len(tokens) > 1 and tokens[1] != "metal":
                raise PetmdError(
                    f"{path}:{number}: units {tokens[1]}: petmd observables reads metal units "
                    f"(Å, eV, ps); rerun with 'units metal'"
                )
            if command == "timestep" and len(tokens) > 1:
                try:
                    log.timestep, log.timestep_set = float(tokens[1]), True
                except ValueError:
                    pass
            elif command == "fix" and len(tokens) > 3:
                _fix_targets(log, tokens)
            elif command == "pair_coeff" and tokens[1:3] == ["*", "*"]:
                elements = [t for t in tokens[3:] if not t.startswith("#")]
                if elements and elements[0] not in _ELEMENTS:  # a hybrid's: pair_coeff * * STYLE [INDEX] ELEMENTS
                    elements = elements[2:] if len(elements) > 1 and elements[1].isdigit() else elements[1:]
                if elements and all(e in _ELEMENTS for e in elements):
                    log.type_elements = elements
            if command in ("minimize", "run", "min_style", "fix", "thermo_style", "units", "timestep", "velocity"):
                last_command = command
    log.blocks = [
        ThermoBlock({name: np.asarray(values, float) for name, values in block.items()}, minimize, line)
        for block, (minimize, line) in zip(blocks, kinds)
    ]
    log.thermo = merge_thermo([b.columns for b in log.blocks if not b.minimize])
    return log


def merge_thermo(runs: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Consecutive runs as one: the columns all of them have, each step once (a `run` after a `run` repeats the
    last step; its first appearance is kept)."""
    runs = [run for run in runs if run]
    if not runs:
        return {}
    names = [n for n in runs[0] if all(n in run for run in runs)]
    merged = {name: np.concatenate([run[name] for run in runs]) for name in names}
    if "Step" in merged:
        _, first = np.unique(merged["Step"], return_index=True)
        keep = np.sort(first)
        merged = {name: values[keep] for name, values in merged.items()}
    return merged


def is_lammps_log(path: Path) -> bool:
    with open_text(path) as f:
        return f.readline().startswith("LAMMPS (")
