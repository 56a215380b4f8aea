"""The CPU: process-wide settings for the commands that run PET models, and what the machine is."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def flush_subnormals() -> bool:
    """Flush subnormal floats to zero (x86 FTZ/DAZ; ARM FZ). A trained model's attention gives some neighbours a
    softmax weight below 1e-38, and every multiply with such an operand takes a slow path: it made the small model's
    training steps 9–16 % slower by the end of a day's training (docs/benchmarks.md, benchmarks/denormals.py), while
    values that small change no energy or force. Call it before the first torch operation: the worker threads torch
    starts then inherit the mode; threads that already exist keep theirs. Returns False where the CPU has no such
    mode."""

    import torch

    return bool(torch.set_flush_denormal(True))
