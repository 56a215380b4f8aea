"""On a CUDA device: the exported model (plain, in chunks, layer by layer), the C++ bridge, pair_style pet (one
rank, and two ranks exchanging messages) and `petmd train` give the CPU's numbers.

Skipped where torch sees no CUDA device (CI has none); run on a GPU machine (tools/offline-gpu/README.md).
PETMD_TEST_DEVICE=cpu runs the same comparisons CPU against CPU, which checks the tests themselves on any machine.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import frame, run_petmd, small_pet, water_box, write_checkpoint, write_config, write_labelled_data
from lammps_helpers import read_single_point, run_inprocess, run_lmp, single_point_input, write_data
from petmd import _bridge
from petmd.checkpoint import load_checkpoint
from petmd.export import export_checkpoint
from petmd.loading import load_model

DEVICE = os.environ.get("PETMD_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device"
)
KEYS = ("energy", "energies", "forces", "virial")
# float64 runs the same arithmetic in another order on the GPU; float32 adds cuBLAS's own summation order
TOLERANCE = {"float64": 1e-10, "float32": 2e-5}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu")
    ckpt = write_checkpoint(folder / "m.ckpt", small_pet(seed=41, n_gnn_layers=3))
    paths = {}
    for dtype in TOLERANCE:
        paths[dtype] = folder / f"m-{dtype}.pt"
        export_checkpoint(ckpt, paths[dtype], dtype=dtype)
    return paths


def assert_close(got, want, tol, what):
    for key in KEYS:
        g, w = np.asarray(got[key], dtype=np.float64), np.asarray(want[key], dtype=np.float64)
        known = ~np.isnan(g)  # LAMMPS's pressure tensor holds the upper triangle of W only
        scale = max(float(np.nanmax(np.abs(w))), 1e-12)
        err = float(np.abs(g[known] - w[known]).max())
        assert err <= tol * scale, f"{what}: {key} differs by {err:.3g} (scale {scale:.3g})"


def model_outputs(path, f, device, chunk):
    model = load_model(path)
    model.set_chunk_atoms(chunk)
    module = model.module.to(device)
    inputs = [torch.from_numpy(a).to(device) for a in (f.positions, f.numbers, f.cell, f.edge_index, f.cell_shifts)]
    mask = torch.ones(f.n_atoms, dtype=torch.bool, device=device)
    mask[0] = False  # a node outside the energy sum, as LAMMPS's ghosts are
    with torch.jit.optimized_execution(False):
        out = module(*inputs, mask)
    return {key: out[key].detach().cpu().numpy() for key in KEYS}


@pytest.mark.parametrize("dtype", TOLERANCE)
@pytest.mark.parametrize("chunk", [0, 40])
def test_exported_model_on_device_equals_cpu(exported, dtype, chunk):
    f = frame(water_box(3, seed=6, cell_tilt=0.4))
    want = model_outputs(exported[dtype], f, "cpu", chunk)
    got = model_outputs(exported[dtype], f, DEVICE, chunk)
    assert_close(got, want, TOLERANCE[dtype], f"{DEVICE} vs cpu, {dtype}, chunk {chunk}")


@pytest.mark.parametrize("dtype", TOLERANCE)
def test_bridge_on_device_equals_cpu(exported, dtype):
    f = frame(water_box(3, seed=7))
    args = (f.positions, f.numbers, f.cell, f.edge_index, f.cell_shifts, np.ones(f.n_atoms, dtype=bool))
    device = DEVICE if ":" in DEVICE or DEVICE == "cpu" else f"{DEVICE}:0"
    bridge = _bridge.Model(str(exported[dtype]), device)
    assert bridge.device == device
    assert_close(
        bridge.compute(*args),
        _bridge.Model(str(exported[dtype])).compute(*args),
        TOLERANCE[dtype],
        f"bridge on {device} vs cpu, {dtype}",
    )


def test_pair_pet_on_device_equals_cpu_on_1_and_2_ranks(tmp_path, exported):
    # two ranks share the one device and exchange messages through the host (cpp/model.cpp compute_exchanged)
    atoms = water_box(4, seed=8)
    data = write_data(tmp_path / "system.data", atoms)
    runs = {
        "cpu": ("device cpu", 1),
        "1 rank": (f"device {DEVICE}", 1),
        "2 ranks": (f"device {DEVICE}", 2),
        "2 ranks, exchange no": (f"device {DEVICE} exchange no", 2),
    }
    results = {}
    for name, (extra, ranks) in runs.items():
        out = tmp_path / name.replace(" ", "_").replace(",", "")
        out.mkdir()
        script = single_point_input(exported["float64"], data, out, pair_extra=extra)
        if ranks == 1:
            run_inprocess(script)
        else:
            result = run_lmp(script, out, ranks=ranks)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            assert ("message exchange between ranks" in result.stdout) == ("exchange no" not in extra)
        sp = read_single_point(out)
        results[name] = {"energy": sp.energy, "energies": sp.energies, "forces": sp.forces, "virial": sp.virial}
    for name in runs:
        assert_close(results[name], results["cpu"], TOLERANCE["float64"], f"pair_style pet, {name} vs cpu")


@pytest.mark.skipif(not DEVICE.startswith("cuda"), reason="TF32 exists on CUDA devices only")
def test_tf32_stays_close_to_float32(exported):
    f = frame(water_box(3, seed=9))
    args = (f.positions, f.numbers, f.cell, f.edge_index, f.cell_shifts, np.ones(f.n_atoms, dtype=bool))
    bridge = _bridge.Model(str(exported["float32"]), DEVICE)
    want = bridge.compute(*args)
    bridge.set_tf32(True)
    try:
        got = bridge.compute(*args)
    finally:
        bridge.set_tf32(False)
    assert_close(got, want, 2e-2, "TF32 vs float32")


def test_training_on_device_takes_the_cpus_steps(tmp_path):
    # float64, plain and chunked gradients: the same optimizer steps, to the summation order's round-off
    data = write_labelled_data(tmp_path / "lj.extxyz", n_frames=6)
    states = {}
    for run, (device, chunk) in enumerate([("cpu", 0), (DEVICE, 0), (DEVICE, 16)]):
        name = f"{run}-{device}-{chunk}".replace(":", "")
        cfg = write_config(tmp_path / f"{name}.yaml", data, epochs=1, device=device, chunk_atoms=chunk, ema_decay=0.5)
        run_petmd("train", cfg, "-o", tmp_path / name, "--no-progress", check=True)
        states[name] = load_checkpoint(tmp_path / name / "last.ckpt")
    want = states.pop("0-cpu-0")
    assert want["global_step"] >= 2
    for name, got in states.items():
        assert got["global_step"] == want["global_step"]
        for key, value in want["model_state"].items():
            torch.testing.assert_close(got["model_state"][key], value, rtol=1e-7, atol=1e-9, msg=f"{name}: {key}")
        assert got["history"][-1]["val_force_mae_mev_per_A"] == pytest.approx(
            want["history"][-1]["val_force_mae_mev_per_A"], rel=1e-7
        )


@pytest.mark.skipif(not DEVICE.startswith("cuda"), reason="TF32 exists on CUDA devices only")
def test_training_in_tf32_stays_close_to_float32(tmp_path):
    data = write_labelled_data(tmp_path / "lj.extxyz", n_frames=6)
    figures = {}
    for tf32 in (False, True):
        cfg = write_config(tmp_path / f"tf32-{tf32}.yaml", data, epochs=2, device=DEVICE, dtype="float32", tf32=tf32)
        run_petmd("train", cfg, "-o", tmp_path / f"tf32-{tf32}", "--no-progress", check=True)
        state = load_checkpoint(tmp_path / f"tf32-{tf32}" / "last.ckpt")
        assert state["config"]["training"]["tf32"] is tf32
        figures[tf32] = state["history"][-1]["val_force_mae_mev_per_A"]
    assert np.isfinite(figures[True]) and figures[True] == pytest.approx(figures[False], rel=0.05)
