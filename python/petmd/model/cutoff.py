"""The smooth cutoff f_c of PET: 1 inside R_c − Δ, a cosine switch to 0 at R_c."""

import math

import torch


def cutoff_function(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    t = ((r - (cutoff - width)) / width).clamp(0.0, 1.0)
    return 0.5 + 0.5 * torch.cos(math.pi * t)
