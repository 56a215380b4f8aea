"""The training benchmarks run end to end and report what they time (no figure is judged: benchmarks/ prints them).
They share the train and E+F step builders of train_throughput.py, so a change there reaches both."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_labelled_data

REPO = Path(__file__).resolve().parents[1]
SMALL_CKPT = REPO / "models" / "pet-water-small.ckpt"


def run_benchmark(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )


@pytest.fixture(scope="module")
def boxes(tmp_path_factory) -> Path:
    return write_labelled_data(tmp_path_factory.mktemp("bench") / "boxes.xyz", n_frames=2)  # 24-atom boxes


def test_train_throughput_reports_each_step_kind(boxes):
    result = run_benchmark(
        "train_throughput.py",
        "--sizes",
        24,
        "--model-size",
        "small",
        "--repeats",
        1,
        "--train-chunks",
        0,
        16,
        "--batch-frames",
        2,
        "--threads",
        1,
        "--data",
        boxes,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    assert row["atoms"] == 24 and set(row["train"]) == {"0", "16"}
    for timing in [*row["train"].values(), row["inference"]]:
        assert len(timing["times_s"]) == 1 and timing["mean_s"] > 0
    # a training step counts the atoms of all rotated copies
    assert row["train"]["16"]["atoms_per_s_mean"] * row["train"]["16"]["mean_s"] == pytest.approx(48)


def test_denormals_times_each_checkpoint_with_flushing_off_and_on(boxes):
    result = run_benchmark(
        "denormals.py",
        SMALL_CKPT,
        "--size",
        24,
        "--batch-frames",
        2,
        "--chunk",
        16,
        "--repeats",
        1,
        "--rounds",
        1,
        "--threads",
        1,
        "--data",
        boxes,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [r["flush_denormal"] for r in rows] == [False, True]
    for r in rows:
        assert r["train"]["atoms_per_s_mean"] * r["train"]["mean_s"] == pytest.approx(48)
        assert r["inference"]["atoms_per_s_mean"] * r["inference"]["mean_s"] == pytest.approx(24)


def test_a_frame_size_missing_from_the_data_is_named_with_the_sizes_there(boxes):
    result = run_benchmark("denormals.py", SMALL_CKPT, "--size", 25, "--data", boxes)
    assert result.returncode != 0
    assert "no frame with [25] atoms" in result.stderr and "[24]" in result.stderr


@pytest.mark.slow
def test_forward_mode_checks_the_hand_written_tangents_against_torch_func(scan_data_path):
    """The measurement behind keeping model/tangents.py: the hand-written tangents and their parameter gradient are
    exact (float64), and the report carries a verdict on torch.func."""
    result = run_benchmark("forward_mode.py", "--model-size", "small", "--repeats", 1, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    errors = {
        key: float(str(value).split()[0])
        for key, value in report["correctness"].items()
        if not str(value).startswith("failed") and "scale" not in key
    }
    assert errors["energy tangent max |hand − jvp|"] < 1e-10
    assert errors["∂S rel. error: hand tangents + backward"] < 1e-10
    assert report["verdict"].startswith(("torch.func can replace", "torch.func cannot replace"))


@pytest.mark.slow
def test_mts_cost_reports_every_mode(tmp_path, scan_data_path):
    out = tmp_path / "mts.json"
    model = REPO / "tests" / "models" / "pet-water-tiny-f64.pt"
    result = run_benchmark("mts_cost.py", "--model", model, "--sizes", 192, "--outer", 1, "--threads", 2, "--json", out)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows] == ["plain", "grid 2i", "ecse", "MTS n=4", "MTS n=8", "MTS n=16"]
    assert all(r["s_per_0.5fs"] > 0 for r in rows) and "| 192 | MTS n=16 |" in result.stdout


@pytest.mark.slow
def test_distributed_training_compares_one_and_two_processes(scan_data_path):
    result = run_benchmark("distributed_training.py", "--frames", 12, "--steps", 2, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [(r["processes"], r["threads_each"]) for r in report["rows"]][0] == (1, report["cores"])
    assert [r["processes"] for r in report["rows"]] == [1, 2] and report["rows"][0]["efficiency"] == 1.0
    assert all(r["atoms_per_s"] > 0 for r in report["rows"])


def test_uncertainty_llpr_reproduces_the_energy_from_last_layer_features(scan_data_path):
    result = run_benchmark("uncertainty_llpr.py", "--checkpoint", SMALL_CKPT, "--max-frames", 40, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["features"] == 260 and report["exactness_eV"] < 1e-4  # Σ f·w = E − baseline (float32 network)
    for method in ("llpr", "ensemble"):
        r = report[method]
        assert r["alpha"] > 0 and 0 <= r["within_1_sigma"] <= r["within_2_sigma"] <= 1
    far = report["far"]
    assert len(far) == 7 and all(entry["sigma_meV_per_atom"] > 0 for entry in far.values())
    # an isolated molecule is far outside the (liquid and ice) data, by both signals
    molecule = far["molecule, H–O–H 104.5°"]
    assert molecule["ratio_to_median"] > 10 and molecule["max_atom_score"] > 10


def test_uncertainty_lammps_times_the_compute_and_halts_the_gas_phase(scan_data_path, tmp_path):
    out = tmp_path / "u.json"
    args = ("--sizes", 192, "--steps", 2, "--rounds", 1, "--trace-steps", 40, "--json", out)
    result = run_benchmark("uncertainty_lammps.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["cost"]["192"]["seconds_per_step"]) == {"without", "every step", "every 10th step"}
    assert [r["temperature_K"] for r in report["md"]] == [300.0, 1000.0]
    assert report["gas_phase"]["halted_at_step"] == 10 and report["gas_phase"]["max_score"] > 20
