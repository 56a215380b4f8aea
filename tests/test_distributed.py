"""Data-parallel training with torchrun (gloo, 2 processes on the CPU): the same trajectory as one process with the
whole batch, a rank killed mid-epoch and resumed (with 2 processes or 1), and the errors of a wrong set-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_petmd, write_config, write_labelled_data
from petmd.distributed import World, share, world_from_environment
from petmd.errors import PetmdError


def torchrun(processes: int, *args, env=None, script=None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m petmd ARGS` (or a script instead of -m petmd)."""
    target = [script] if script else ["-m", "petmd"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(
        command + target + [str(a) for a in args], env=full_env, capture_output=True, text=True, timeout=600
    )


def weights(run: Path) -> dict:
    state = torch.load(run / "last.ckpt", weights_only=False)
    return {"step": state["global_step"], "model": state["model_state"], "optimizer": state["optimizer_state"]}


def assert_same_state(a: Path, b: Path, tolerance: float) -> None:
    wa, wb = weights(a), weights(b)
    assert wa["step"] == wb["step"]
    for key, value in wa["model"].items():
        torch.testing.assert_close(wb["model"][key], value, rtol=0, atol=tolerance, msg=key)
    moments_a = [s["exp_avg_sq"] for s in wa["optimizer"]["state"].values()]
    moments_b = [s["exp_avg_sq"] for s in wb["optimizer"]["state"].values()]
    for x, y in zip(moments_a, moments_b):
        torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-30)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_labelled_data(tmp_path_factory.mktemp("ddp") / "data.xyz", n_frames=10)


@pytest.mark.parametrize(
    "training",
    [
        {"atoms_per_batch": 72},  # the plain double backward (batches below chunk_atoms), rotations and inversion
        {"atoms_per_batch": 144, "chunk_atoms": 16, "variance_copies": 2, "variance_weight": 0.5, "ema_decay": 0.9},
    ],
    ids=["plain", "chunked-variance-ema"],
)
def test_two_processes_follow_one_process(tmp_path, data, training):
    """2 processes × half of each batch = 1 process × the whole batch, step for step (float64, 5 steps)."""
    config = write_config(tmp_path / "cfg.yaml", data, epochs=2, **training)
    run_petmd("train", config, "-o", tmp_path / "one", "--no-progress", "--max-steps", 5, check=True)
    two = torchrun(2, "train", config, "-o", tmp_path / "two", "--no-progress", "--max-steps", 5)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_state(tmp_path / "one", tmp_path / "two", tolerance=1e-12)
    assert two.stdout.count("training stopped (max-steps)") == 1  # rank 0 reports for all


def test_two_processes_with_stress_labels_follow_one_process(tmp_path):
    """The stress term's normalisation by the whole batch's labelled structures (some frames without a label)."""
    from test_stress import labelled_lj

    data = labelled_lj(tmp_path / "lj.xyz", 10, with_stress=lambda k: k % 3 != 0)
    config = write_config(tmp_path / "cfg.yaml", data, epochs=2, atoms_per_batch=48, stress_weight=5.0)
    run_petmd("train", config, "-o", tmp_path / "one", "--no-progress", "--max-steps", 4, check=True)
    two = torchrun(2, "train", config, "-o", tmp_path / "two", "--no-progress", "--max-steps", 4)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_state(tmp_path / "one", tmp_path / "two", tolerance=1e-12)


def test_a_killed_rank_stops_the_run_and_it_resumes(tmp_path, data):
    """SIGKILL of rank 1 after step 4 (mid-epoch 2): torchrun stops the run; --resume with 2 processes, and with 1,
    ends where an uninterrupted run ends."""
    config = write_config(tmp_path / "cfg.yaml", data, epochs=3, atoms_per_batch=72, ema_decay=0.9)
    run_petmd("train", config, "-o", tmp_path / "whole", "--no-progress", check=True)
    for processes in (2, 1):
        run = tmp_path / f"resumed-{processes}"
        killed = torchrun(
            2,
            "train",
            config,
            "-o",
            run,
            "--no-progress",
            env={"PETMD_DEBUG_KILL_AT_STEP": "4", "PETMD_DEBUG_KILL_RANK": "1"},
        )
        assert killed.returncode != 0
        assert 3 <= weights(run)["step"] <= 4  # rank 0's checkpoint of the last step both finished
        if processes == 2:
            resumed = torchrun(2, "train", config, "-o", run, "--no-progress", "--resume")
        else:
            resumed = run_petmd("train", config, "-o", run, "--no-progress", "--resume")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert_same_state(tmp_path / "whole", run, tolerance=1e-12)


def test_more_processes_than_a_batch_has_frames_is_refused(tmp_path, data):
    config = write_config(tmp_path / "cfg.yaml", data, atoms_per_batch=24)  # one 24-atom frame per batch
    result = torchrun(2, "train", config, "-o", tmp_path / "run", "--no-progress")
    assert result.returncode != 0
    assert "2 training processes, but training.atoms_per_batch 24 puts at most 1 frames" in result.stderr
    assert "start at most 1 processes, or raise atoms_per_batch" in result.stderr


def test_processes_with_different_configs_are_refused(tmp_path, data):
    for rank, lr in ((0, 1e-3), (1, 2e-3)):
        write_config(tmp_path / f"cfg{rank}.yaml", data, atoms_per_batch=72, learning_rate=lr)
    script = tmp_path / "per_rank.py"
    script.write_text(
        "import os, sys\nfrom petmd.cli import main\n"
        f"sys.exit(main(['train', r'{tmp_path}/cfg' + os.environ['RANK'] + '.yaml', '-o', r'{tmp_path}/run', "
        "'--no-progress']))\n"
    )
    result = torchrun(2, script=str(script))
    assert result.returncode != 0
    assert "the training processes were given different configs (ranks [1] differ from rank 0)" in result.stderr


def test_cuda_training_on_a_machine_without_it_is_refused(tmp_path, data):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = write_config(tmp_path / "cfg.yaml", data, atoms_per_batch=72, device="cuda")
    result = torchrun(2, "train", config, "-o", tmp_path / "run", "--no-progress")
    assert result.returncode != 0 and "training.device 'cuda': no such CUDA device" in result.stderr


def test_shares_balance_atoms_and_cover_the_batch():
    group, n_atoms = [7, 3, 9, 1, 4], [192, 864, 192, 96, 192]
    shares = [share(group, n_atoms, World(rank, 2)) for rank in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(group) and not set(shares[0]) & set(shares[1])
    atoms = [sum(n_atoms[group.index(i)] for i in s) for s in shares]
    assert atoms == [864, 672]  # the 864-atom frame alone, the rest together
    assert share(group, n_atoms, World(0, 1)) == group
    assert share([5], [10], World(1, 2)) == []  # a batch smaller than the world leaves a process idle


def test_a_launcher_environment_that_is_not_numbers_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(PetmdError, match="RANK, WORLD_SIZE and LOCAL_RANK must be integers"):
        world_from_environment()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert world_from_environment() == World(1, 2, 1)
