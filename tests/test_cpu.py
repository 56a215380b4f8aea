"""The commands that run models flush subnormal floats to zero in every torch thread (petmd.cpu)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Multiplies 2²² subnormal floats on 2 torch threads and prints how many products stay nonzero: 0 when every thread
# flushes them, half when only the main thread does. The input comes from numpy: a torch op would start the threads.
PROBE = """
import numpy as np, torch
torch.set_num_threads(2)
{setup}
x = torch.from_numpy(np.full(1 << 22, 1e-39, dtype=np.float32))
print(int((x * 1.0 != 0).sum()))
"""


def nonzero_products(setup: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def test_the_probe_sees_subnormals_by_default():
    assert nonzero_products("") == 1 << 22


def test_model_commands_flush_subnormals_in_all_threads(tmp_path):
    # eval fails on its missing model file, after the process-wide set-up
    setup = f"from petmd.cli import main\nassert main(['eval', '{tmp_path}/missing.pt', '{tmp_path}/none.xyz']) == 2"
    assert nonzero_products(setup) == 0


@pytest.mark.parametrize("command", ["observables", "compare"])
def test_commands_that_only_read_files_leave_the_cpu_mode_alone(tmp_path, command):
    setup = (
        f"from petmd.cli import main\ntry:\n    main(['{command}', '{tmp_path}/none'])\nexcept SystemExit:\n    pass"
    )
    assert nonzero_products(setup) == 1 << 22
