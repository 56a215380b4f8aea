"""`petmd observables`: one pass over a run's trajectory files and logs, every observable with a block-average
error, written as observables.json, CSV tables and PNG figures."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import PetmdError
from .blocks import mean_estimate, slope_estimate
from .dynamics import (
    AngularMomentum,
    TimeCorrelation,
    Unwrapper,
    diffusion_from_msd,
    kinetic_temperature,
    orientation_overlap,
    squared_displacement,
    yeh_hummer_note,
)
from .frames import TrajectoryFrame
from .lammps_log import merge_thermo
from .structure import DipoleCorrelation, OrientationFreeEnergy, Pairs, RDFAccumulator
from .trajectory import Inputs, classify, estimated_frames, iter_frames
from .water import find_molecules

AMU_PER_A3_IN_G_PER_CM3 = 1.66053906660


@dataclass
class Options:
    types: Optional[Sequence[str]] = None  # element of each LAMMPS type, in type order
    timestep: Optional[float] = None  # ps per MD step (dumps: time = step × timestep)
    frame_interval: Optional[float] = None  # ps between frames of formats without steps or times
    r_max: float = 6.0
    rdf_bins: int = 120
    dipole_bins: int = 30
    orientation_bins: Tuple[int, int] = (8, 16)  # (cos θ, φ)
    n_blocks: int = 5
    max_lag: float = 10.0  # ps, longest lag of MSD and c_uu
    fit_window: Optional[Tuple[float, float]] = None  # ps, MSD range fitted for D
    discard: float = 0.0  # ps from the start left out (equilibration)
    progress: bool = True


class _Dynamics:
    """MSD and c_uu, set up at the second frame (when the frame interval is known)."""

    def __init__(self, options: Options):
        self.options = options
        self.dt: Optional[float] = None
        self.previous_time: Optional[float] = None
        self.pending: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None
        self.msd: Optional[TimeCorrelation] = None
        self.cuu: Optional[TimeCorrelation] = None
        self.stopped: Optional[str] = None

    def add(self, k: int, frame: TrajectoryFrame, data_msd, data_u):
        if self.stopped:
            return
        if frame.time is None:
            self.stopped = f"{frame.source} has no time: give --timestep (or the run's log) to get MSD, D and c_uu"
            return
        if k == 0:
            self.pending, self.previous_time = (data_msd, data_u), frame.time
            return
        assert self.previous_time is not None and self.pending is not None or self.dt is not None
        interval = frame.time - (self.previous_time or 0.0)
        if self.dt is None:
            assert self.pending is not None
            if interval <= 0:
                self.stopped = f"{frame.source}: time does not increase ({self.previous_time} → {frame.time} ps)"
                return
            self.dt = interval
            max_lag = max(1, int(round(self.options.max_lag / self.dt)))
            msd = self.msd = TimeCorrelation(max_lag, squared_displacement)
            cuu = self.cuu = TimeCorrelation(max_lag, orientation_overlap)
            msd.add(0, self.pending[0])
            if self.pending[1] is not None:
                cuu.add(0, self.pending[1])
            self.pending = None
        elif abs(interval - self.dt) > 1e-6 * self.dt + 1e-9:
            self.stopped = (
                f"{frame.source}: frames are not evenly spaced in time ({interval:g} ps after the "
                f"previous one, {self.dt:g} ps before): MSD and c_uu need even spacing"
            )
            self.msd = self.cuu = None
            return
        self.previous_time = frame.time
        assert self.msd is not None and self.cuu is not None  # set up at the second frame, above
        self.msd.add(k, data_msd)
        if data_u is not None:
            self.cuu.add(k, data_u)

    def result(self, n_blocks: int, n_frames: int, box_length: Optional[float], temperature) -> Dict[str, dict]:
        if self.msd is None:
            return {}
        out = {}
        lags, msd, err, per_block = self.msd.result(n_blocks)
        t = lags * self.dt
        out["msd_O"] = {"t": t, "msd": msd, "err": err, "unit": "Å²", "n_blocks": per_block.shape[0]}
        block_ps = n_frames / max(1, per_block.shape[0]) * self.dt
        if self.options.fit_window:
            window = tuple(self.options.fit_window)
        else:
            top = min(t[-1], block_ps)
            window = (0.2 * top, top)
        diffusion = diffusion_from_msd(t, msd, per_block, window)
        if window[1] < 1.0:
            diffusion["warning"] = (
                f"the fit ends at {window[1]:.3g} ps: liquid water's MSD is linear (diffusive) "
                f"only beyond ~1 ps, so this D is not a diffusion coefficient; run longer"
            )
        diffusion["unit"] = "Å²/ps"
        if box_length:
            diffusion["finite_size"] = yeh_hummer_note(box_length, temperature)
        out["diffusion_O"] = diffusion
        if self.cuu is not None and self.cuu.series.n_frames:
            lags, c, c_err, _ = self.cuu.result(n_blocks)
            out["c_uu"] = {"t": lags * self.dt, "c": c, "err": c_err, "n_blocks": per_block.shape[0]}
        return out


def _masses(symbols) -> np.ndarray:
    from ase.data import atomic_masses, atomic_numbers

    return np.array([atomic_masses[atomic_numbers[s]] for s in symbols])


def _scalar(values, n_blocks: int, unit: str, scale: float = 1.0) -> Optional[dict]:
    values = np.asarray(values, float) * scale
    if len(values) == 0:
        return None
    mean, err, used = mean_estimate(values, n_blocks)
    return {
        "value": mean,
        "err": err if math.isfinite(err) else None,
        "unit": unit,
        "n_blocks": used,
        "samples": len(values),
    }


def _thermo_observables(inputs: Inputs, options: Options, n_atoms: Optional[int], notes: List[str]) -> dict:
    log = inputs.log
    thermo = merge_thermo([log.thermo for log in inputs.logs])
    if not thermo:
        return {}
    assert log is not None  # thermo output comes from a log
    time = thermo["Time"] if "Time" in thermo else thermo["Step"] * log.timestep if "Step" in thermo else None
    if time is not None and options.discard:
        keep = time >= time[0] + options.discard
        thermo = {k: v[keep] for k, v in thermo.items()}
        time = time[keep]
    n_atoms = n_atoms or log.n_atoms
    out = {}
    if "Temp" in thermo:
        out["temperature"] = _scalar(thermo["Temp"], options.n_blocks, "K")
    if "PotEng" in thermo and n_atoms:
        out["potential_energy"] = _scalar(thermo["PotEng"], options.n_blocks, "eV/atom", 1.0 / n_atoms)
    if "Press" in thermo:
        out["pressure"] = _scalar(thermo["Press"], options.n_blocks, "bar")
    if "Density" in thermo:
        out["density"] = _scalar(thermo["Density"], options.n_blocks, "g/cm³")
    thermostatted = log.target_temperature is not None or log.barostat
    quantity = (
        "Econserve" if "Econserve" in thermo else ("TotEng" if "TotEng" in thermo and not thermostatted else None)
    )
    if quantity and time is not None and n_atoms and len(time) > 2:
        slope, err = slope_estimate(time, thermo[quantity] * 1e3 / n_atoms, options.n_blocks)
        out["conserved_drift"] = {
            "value": slope,
            "err": err if math.isfinite(err) else None,
            "unit": "meV/atom/ps",
            "quantity": quantity,
            "n_blocks": options.n_blocks,
        }
    elif thermostatted and "Econserve" not in thermo:
        notes.append(
            "the run is thermostatted and its thermo output has no econserve column: add econserve to "
            "thermo_style to get the drift of the conserved quantity"
        )
    return out


def analyze(paths: Sequence[str], options: Options | None = None) -> dict:
    """Every observable the inputs allow, as a JSON-ready dict (arrays as numpy arrays)."""
    options = Options() if options is None else options
    from tqdm import tqdm

    inputs = classify(paths)
    notes: List[str] = []
    result: dict = {
        "inputs": {
            "trajectories": [str(p) for p in inputs.trajectories],
            "logs": [str(log.path) for log in inputs.logs],
        },
        "n_blocks": options.n_blocks,
    }
    rdf = RDFAccumulator(options.r_max, options.rdf_bins)
    dipoles = DipoleCorrelation(options.r_max, options.dipole_bins)
    orientation = OrientationFreeEnergy(*options.orientation_bins)
    n_estimate = estimated_frames(inputs) if inputs.trajectories else None
    dynamics = _Dynamics(options)
    unwrap = Unwrapper()
    first: Optional[TrajectoryFrame] = None
    density, temperature, energy, volumes = [], [], [], []
    hops, previous_owner, not_whole, unassigned = 0, None, 0, 0
    first_not_whole: Optional[float] = None  # time of the first frame with a molecule that is not whole
    angular = None
    start_time, last_time, k = None, None, 0
    frames = iter_frames(inputs, options.types, options.timestep, options.frame_interval)
    for frame in tqdm(
        frames, total=n_estimate, unit="frame", desc="observables", disable=not options.progress, mininterval=1.0
    ):
        positions = unwrap(frame)
        if options.discard:
            if frame.time is None:
                raise PetmdError(f"--discard needs times: {frame.source} has none (give --timestep or the log)")
            start_time = frame.time if start_time is None else start_time
            if frame.time < start_time + options.discard:
                continue
        if first is None:
            first = frame
            masses = _masses(frame.symbols)
            composition = {s: int(n) for s, n in zip(*np.unique(frame.symbols, return_counts=True))}
            single_molecule = len(frame.symbols) == 3 and composition == {"H": 2, "O": 1}
            if single_molecule and frame.velocities is not None:
                angular = AngularMomentum(masses)
        elif len(frame.symbols) != len(first.symbols) or not np.array_equal(frame.symbols, first.symbols):
            raise PetmdError(
                f"{frame.source}: the atoms differ from those of the first frame ({first.source}): "
                f"one run's files must hold the same atoms in every frame"
            )
        water = "O" in composition and "H" in composition
        molecules = find_molecules(frame) if water else None
        if molecules is not None:
            if previous_owner is not None:
                hops += int(np.sum(molecules.owner != previous_owner))
            previous_owner = molecules.owner
            broken = int((~molecules.whole).sum())
            not_whole += broken
            if broken and first_not_whole is None and frame.time is not None:
                first_not_whole = frame.time
            unassigned += int((molecules.owner < 0).sum())
            orientation.add(k, molecules)
        if frame.pbc.all():
            pairs = Pairs(frame, options.r_max)
            rdf.add(k, frame, pairs)
            if molecules is not None:
                dipoles.add(k, frame, pairs, molecules)
            density.append(masses.sum() / frame.volume * AMU_PER_A3_IN_G_PER_CM3)
            volumes.append(frame.volume)
        oxygens = molecules.oxygens if molecules is not None else np.arange(len(positions))
        com = (masses[:, None] * positions).sum(0) / masses.sum()
        dynamics.add(k, frame, (positions[oxygens], com), molecules.u if molecules is not None else None)
        if frame.velocities is not None:
            temperature.append(kinetic_temperature(masses, frame.velocities))
            if angular is not None and frame.time is not None:
                angular.add(frame.time, positions, frame.velocities, frame.forces)
        if frame.energy is not None:
            energy.append(frame.energy / len(masses))
        last_time = frame.time
        k += 1
    n_blocks = options.n_blocks
    if first is not None:
        result["system"] = {
            "n_atoms": len(first.symbols),
            "composition": composition,
            "periodic": bool(first.pbc.all()),
            "n_frames": k,
            "time_span_ps": (last_time - start_time if start_time is not None else last_time - first.time)
            if last_time is not None and first.time is not None
            else None,
            "frame_interval_ps": dynamics.dt,
            "constant_volume": bool(np.ptp(volumes) <= 1e-6 * np.mean(volumes)) if volumes else None,
        }
        if rdf.g.n_frames:
            result.update(rdf.result(n_blocks))
        if dipoles.sums.n_frames:
            result.update(dipoles.result(n_blocks))
        if orientation.totals.n_frames and orientation.totals.blocks(1).sum() > 0:
            result.update(orientation.result(n_blocks))
        if molecules is not None:
            result["molecules"] = {
                "n_oxygen": len(molecules.oxygens),
                "proton_hops": hops,
                "not_whole_molecule_frames": not_whole,
                "first_not_whole_ps": first_not_whole,
                "unassigned_H_frames": unassigned,
                "rule": "each H belongs to its nearest O within 2 Å; a hop is an H whose O changed "
                "since the previous frame; molecules without exactly two H are left out "
                "of orientation observables",
            }
        if density:
            result["density"] = _scalar(density, n_blocks, "g/cm³")
        if temperature:
            result["temperature"] = _scalar(temperature, n_blocks, "K")
        if energy:
            result["potential_energy"] = _scalar(energy, n_blocks, "eV/atom")
        if angular is not None and angular.t:
            result.update(angular.result(n_blocks))
        if dynamics.stopped:
            notes.append(dynamics.stopped)
    log_figures = _thermo_observables(inputs, options, len(first.symbols) if first is not None else None, notes)
    for key, value in log_figures.items():
        if key in ("density",) and key in result:
            continue  # the trajectory's cells and masses give it exactly; the log's column may be rounded
        if value is not None:
            result[key] = value  # the log samples more often than the dump
    if first is not None:
        box = float(np.mean(volumes)) ** (1 / 3) if volumes else None
        t = result.get("temperature", {}).get("value") if result.get("temperature") else None
        result.update(
            dynamics.result(
                n_blocks, k, box, inputs.log.target_temperature if inputs.log and inputs.log.target_temperature else t
            )
        )
    if inputs.log is not None:
        result.setdefault("system", {})
        result["system"].update(
            {
                "target_temperature_K": inputs.log.target_temperature,
                "target_pressure_bar": inputs.log.target_pressure,
                "barostat": inputs.log.barostat,
                "timestep_ps": inputs.log.timestep,
            }
        )
    result["notes"] = notes
    return result


def _clean(value):
    """JSON-ready: arrays to lists, NaN/inf to null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def load_observables(directory) -> dict:
    path = Path(directory) / "observables.json"
    if not path.exists():
        raise PetmdError(f"{directory} has no observables.json: run `petmd observables ... -o {directory}` first")
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PetmdError(f"{path} is not valid JSON ({err})") from None
    # every file `petmd observables` writes records its inputs; anything else would compare as "no observables"
    if not isinstance(result, dict) or "inputs" not in result:
        found = f"a JSON {type(result).__name__}" if not isinstance(result, dict) else "a JSON object without 'inputs'"
        raise PetmdError(
            f"{path} is not an observables.json of `petmd observables` ({found}): run `petmd observables ... -o "
            f"{directory}` to write one"
        )
    return result
