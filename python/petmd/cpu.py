"""Process-wide CPU settings for the commands that run PET models."""

from __future__ import annotations


def flush_subnormals() -> bool:
    """Flush subnormal floats to zero (x86 FTZ/DAZ; ARM FZ). A trained model's attention gives some neighbours a
    softmax weight below 1e-38, and every multiply with such an operand takes a slow path: it made the small model's
    training steps 9–16 % slower by the end of a day's training (docs/benchmarks.md, benchmarks/denormals.py), while
    values that small change no energy or force. Call it before the first torch operation: the worker threads torch
    starts then inherit the mode; threads that already exist keep theirs. Returns False where the CPU has no such
    mode."""

    import torch

    return bool(torch.set_flush_denormal(True))
