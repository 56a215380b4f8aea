"""Resumable LAMMPS runs in segments (petmd.helpers.segments) on the real `lmp`: a chain of segments continues the
dynamics exactly, thermostat state included; a run killed mid-segment resumes to the same trajectory; changed
settings are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from petmd.cpu import cpu_model
from petmd.errors import PetmdError
from petmd.helpers.lammps_run import read_thermo
from petmd.helpers.segments import RunBusy, SegmentedRun
from petmd.helpers.structures import write_lammps_data

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(__file__).parent / "models" / "pet-water-tiny-f64.pt"
PAIR_FILE = ROOT / "examples" / "pair-pet.lammps"
LIQUID = ROOT / "examples" / "liquid-water" / "nvt.lammps"
MOLECULE = ROOT / "examples" / "gas-phase" / "molecule.lammps"


def molecule_run(folder: Path, segments: int, steps: int = 20) -> SegmentedRun:
    variables = {"model": MODEL, "pairfile": PAIR_FILE, "data": ROOT / "examples/gas-phase/water-molecule.data"}
    return SegmentedRun(folder, MOLECULE, dict(variables, steps=steps, every=5, mode="none", mts=1), segments)


def liquid_run(folder: Path, data: Path, segments: int, steps: int, start_restart=None) -> SegmentedRun:
    variables = {"model": MODEL, "pairfile": PAIR_FILE, "data": data, "mode": "none", "mts": 1, "tau": 0.01}
    variables.update(steps=steps, symevery=1000, dumpevery=5, thermoevery=5)
    return SegmentedRun(folder, LIQUID, variables, segments, start_restart=start_restart)


def water_data(tmp_path: Path) -> Path:
    from conftest import water_box

    return write_lammps_data(water_box(n_side=3, seed=3), tmp_path / "water.data")


def test_segments_continue_a_thermostatted_run_as_one_run(tmp_path):
    """Two segments of 10 steps equal one run of 20 with a strong CSVR thermostat (τ = 5 fs): the restart file keeps
    positions, velocities, image flags, the thermostat's random state and the energy it exchanged."""
    data = water_data(tmp_path)
    whole = liquid_run(tmp_path / "whole", data, segments=1, steps=20)
    chain = liquid_run(tmp_path / "chain", data, segments=2, steps=10)
    assert whole.run() and chain.run() and chain.complete and chain.done == 2
    a = read_thermo(whole.logs[0])[-1]
    b = read_thermo(chain.logs[1])[-1]
    assert b["Step"][0] == 10 and b["Step"][-1] == 20
    for column in ("Temp", "PotEng", "Econserve"):
        np.testing.assert_allclose(b[column], a[column][2:], rtol=1e-9, err_msg=column)
    assert len(chain.dumps) == 2 and not (chain.folder / "segment-000.restart").exists()  # the newest one is kept
    state = json.loads((chain.folder / "segments.json").read_text())
    assert [s["segment"] for s in state["segments"]] == [0, 1]
    ran = chain.provenance()  # when and where, for reports that outlive the machine
    assert ran["cpus"] == [cpu_model()] and ran["first_finished"] <= ran["last_finished"]
    assert ran["last_finished"] == state["segments"][-1]["finished"] and ran["wall_s"] == chain.wall_s > 0


def test_a_run_continuing_another_restarts_its_clock(tmp_path):
    data = water_data(tmp_path)
    first = liquid_run(tmp_path / "first", data, segments=1, steps=10)
    first.run()
    second = liquid_run(tmp_path / "second", data, segments=1, steps=10, start_restart=first.last_restart)
    second.run()
    thermo = read_thermo(second.logs[0])[-1]
    assert thermo["Step"][0] == 0 and thermo["Time"][0] == 0.0
    np.testing.assert_allclose(thermo["Temp"][0], read_thermo(first.logs[0])[-1]["Temp"][-1], rtol=1e-9)


def test_a_killed_run_resumes_to_the_same_trajectory(tmp_path):
    """SIGKILL in the middle of the second segment; the same command again redoes that segment from the first
    one's restart file and ends where an uninterrupted chain ends."""
    reference = molecule_run(tmp_path / "reference", segments=3, steps=200)
    reference.run()
    folder = tmp_path / "killed"
    script = (
        "import sys; sys.path.insert(0, %r); from test_segments import molecule_run; from pathlib import Path; "
        "molecule_run(Path(%r), segments=3, steps=200).run()" % (str(Path(__file__).parent), str(folder))
    )
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 120
    while not (folder / "segment-001.dump").exists() or (folder / "segment-001.dump").stat().st_size == 0:
        assert process.poll() is None and time.monotonic() < deadline, "the second segment never started"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed = molecule_run(folder, segments=3, steps=200)
    assert killed.done == 1 and not killed.complete
    assert killed.run() and killed.complete
    end = read(killed.dumps[-1], index=-1, format="lammps-dump-text")
    expected = read(reference.dumps[-1], index=-1, format="lammps-dump-text")
    np.testing.assert_array_equal(end.positions, expected.positions)
    assert not list(folder.glob("*.part"))


def test_changed_settings_are_refused_and_a_longer_run_extends(tmp_path):
    run = molecule_run(tmp_path / "m", segments=1)
    run.run()
    with pytest.raises(PetmdError, match=r"other settings \(steps: 20 → 40\).*another output folder"):
        molecule_run(tmp_path / "m", segments=1, steps=40)
    longer = molecule_run(tmp_path / "m", segments=2)
    assert longer.done == 1 and longer.run() and longer.done == 2
    assert read_thermo(longer.logs[1])[-1]["Step"][-1] == 40


def test_a_run_held_by_another_process_is_refused(tmp_path):
    """Two processes on one run would overwrite each other's segments: the second is refused, and the lock goes
    with the process that held it."""
    holder = molecule_run(tmp_path / "m", segments=1)
    holder.folder.mkdir(parents=True)
    with holder._lock():
        with pytest.raises(RunBusy, match="being run by another process"):
            molecule_run(tmp_path / "m", segments=1).run()
    assert molecule_run(tmp_path / "m", segments=1).run()
