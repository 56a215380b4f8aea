"""The MD runs of the study, each a chain of resumable segments (petmd.helpers.segments): liquid water (independent
replicas, each a plain equilibration from its own SCAN frame, then plain, grid 2i by multiple time stepping and ECSE
production runs from its end) and the isolated molecule (NVE from rest in every symmetrization mode)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from petmd.helpers.segments import RunBusy, SegmentedRun
from petmd.helpers.structures import HH_WALL, liquid_water, write_lammps_data

EXAMPLES = Path(__file__).resolve().parents[1]
PAIR_FILE = EXAMPLES / "pair-pet.lammps"
LIQUID_INPUT = EXAMPLES / "liquid-water" / "nvt.lammps"
GAS_INPUT = EXAMPLES / "gas-phase" / "molecule.lammps"
GAS_DATA = EXAMPLES / "gas-phase" / "water-molecule.data"


@dataclass(frozen=True)
class Kind:
    """One way of running the potential: pair_style pet's symmetrize mode, and the r-RESPA factor that applies its
    correction every mts-th step (1: the mode every step)."""

    name: str  # folder and label
    mode: str
    mts: int = 1


LIQUID_KINDS = [Kind("plain", "none"), Kind("grid-2i-mts8", "grid 2i", 8), Kind("ecse", "ecse")]
GAS_KINDS = [
    Kind("plain", "none"),
    Kind("grid-2i", "grid 2i"),
    Kind("random", "random"),
    Kind("ecse", "ecse"),
    Kind("grid-2i-mts4", "grid 2i", 4),
]


@dataclass(frozen=True)
class Lengths:
    """Run lengths in steps of 0.5 fs (multiples of every mts and of the sampling intervals)."""

    equilibration: int  # per segment; 2 segments
    liquid_segment: int
    liquid_segments: int
    liquid_sample: int  # dump and thermo interval
    symmetry_every: int  # compute pet/symmetry interval
    gas_segment: int
    gas_segments: int
    gas_sample: int
    discard_ps: float  # liquid production left out of the observables
    liquid_replicas: int  # independent liquid replicas (own starting frame, velocities and equilibration)


FULL = Lengths(2000, 2000, 3, 40, 200, 4000, 5, 20, 0.5, 4)
SHORT = Lengths(24, 32, 1, 8, 32, 40, 2, 20, 0.0, 2)
LIQUID_SEED = 20261121  # of replica 0's velocities and thermostat; replica k uses LIQUID_SEED + k


def liquid_runs(out: Path, model: Path, lengths: Lengths, replica: int) -> Dict[str, SegmentedRun]:
    """One replica of the liquid: its equilibration (plain, CSVR τ = 0.1 ps) from SCAN frame ``replica`` (structures.
    liquid_water's start) and, from its end, the production runs (CSVR τ = 1 ps, which leaves the dynamics of 192
    atoms all but untouched); keyed by kind name."""
    folder = liquid_folder(out, replica)
    data = folder / "water.data"
    if not data.exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_lammps_data(liquid_water(start=replica), data)
    common = {
        "seed": LIQUID_SEED + replica,
        "model": model.resolve(),
        "data": data.resolve(),
        "pairfile": PAIR_FILE,
        "hhwall": HH_WALL,  # the liquid runs' H–H wall (examples/pair-pet.lammps)
        "symgrid": "2",
        "symevery": lengths.symmetry_every,
        "dumpevery": lengths.liquid_sample,
        "thermoevery": lengths.liquid_sample,
    }
    equilibration = SegmentedRun(
        folder / "equilibration",
        LIQUID_INPUT,
        dict(common, steps=lengths.equilibration, mode="none", mts=1, tau=0.1),
        segments=2,
    )
    runs = {"equilibration": equilibration}
    for kind in LIQUID_KINDS:
        variables = dict(common, steps=lengths.liquid_segment, mode=kind.mode, mts=kind.mts, tau=1.0)
        runs[kind.name] = SegmentedRun(
            folder / kind.name,
            LIQUID_INPUT,
            variables,
            segments=lengths.liquid_segments,
            start_restart=_end_of(equilibration),
        )
    return runs


def liquid_folder(out: Path, replica: int) -> Path:
    return out / "liquid" / f"replica-{replica}"


def _end_of(run: SegmentedRun) -> Path:
    """The restart file a run will end with (known before it has run: the name of its last segment's restart)."""
    return run.folder / run.name(run.segments - 1, "restart")


def gas_runs(out: Path, model: Path, lengths: Lengths) -> Dict[str, SegmentedRun]:
    """NVE of one molecule from its own minimum with zero linear and angular momentum, one run per mode."""
    runs = {}
    for kind in GAS_KINDS:
        variables = {
            "model": model.resolve(),
            "data": GAS_DATA,
            "pairfile": PAIR_FILE,
            "mode": kind.mode,
            "mts": kind.mts,
            "steps": lengths.gas_segment,
            "every": lengths.gas_sample,
        }
        runs[kind.name] = SegmentedRun(out / "gas" / kind.name, GAS_INPUT, variables, segments=lengths.gas_segments)
    return runs


def ready(run: SegmentedRun) -> bool:
    """Whether the run can take its next segment: not complete, and the restart it starts from exists."""
    return not run.complete and (run.done > 0 or run.start_restart is None or run.start_restart.exists())


def run_liquid(
    out: Path, model: Path, lengths: Lengths, names, deadline: Optional[float], records: Optional[Path] = None
) -> bool:
    """The liquid replicas in turn, each to its end, so that whatever stops the work leaves whole replicas (every
    kind from the same start); runs with a record (analysis.recorded) are done already. A replica whose equilibration
    another process is running is waited for: the production runs of both processes start from it. Returns whether
    all replicas are complete."""
    complete = True
    for replica in range(lengths.liquid_replicas):
        runs = liquid_runs(out, model, lengths, replica)
        todo = chosen(runs, names, recorded_names(records, "liquid", runs, replica))
        if not todo:
            continue
        _wait_while_busy(runs["equilibration"], deadline)
        if not run_round_robin(todo, deadline):
            if deadline is not None and time.monotonic() > deadline:
                return False
            complete = False
    return complete


def chosen(runs: Dict[str, SegmentedRun], names, recorded=frozenset()) -> List[SegmentedRun]:
    """The runs named (all for None) that have no record yet, and the liquid's equilibration with them, since they
    start from it."""
    kinds = [run for name, run in runs.items() if name != "equilibration" and (names is None or name in names)]
    kinds = [run for run in kinds if run.folder.name not in recorded]
    return [runs["equilibration"]] + kinds if kinds and "equilibration" in runs else kinds


def record_path(records: Optional[Path], stage: str, name: str, replica: Optional[int] = None) -> Optional[Path]:
    """Where a finished run's analysis is kept (analysis.recorded), so that it outlives the run's files."""
    if records is None:
        return None
    folder = records / stage / f"replica-{replica}" if replica is not None else records / stage
    return folder / f"{name}.json"


def recorded_names(records: Optional[Path], stage: str, names, replica: Optional[int] = None) -> set:
    """Those of ``names`` whose runs have a record: finished, wherever their files are."""
    paths = {name: record_path(records, stage, name, replica) for name in names}
    return {name for name, path in paths.items() if path is not None and path.exists()}


def _wait_while_busy(run: SegmentedRun, deadline: Optional[float], poll_s: float = 20.0) -> None:
    """Run ``run`` to its end, or wait while another process does (RunBusy), until ``deadline``."""
    while deadline is None or time.monotonic() < deadline:
        try:
            run.run(deadline)
            return
        except RunBusy:
            time.sleep(poll_s)


def run_round_robin(runs: List[SegmentedRun], deadline: Optional[float]) -> bool:
    """One segment of each run in turn, so that every run has about the same length whenever the work stops
    (a partial study compares like with like). Runs another process is running are left to it, so several
    processes (one core each) can share a stage. Returns whether all runs are complete."""
    busy: set = set()
    while True:
        pending = [run for run in runs if ready(run) and run.folder not in busy]
        if not pending:
            return all(run.complete for run in runs)
        for run in pending:
            try:
                if not run.run(deadline, max_segments=1):
                    return False
            except RunBusy:
                busy.add(run.folder)
