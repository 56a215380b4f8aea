#!/usr/bin/env python
"""How well petmd's uncertainty (petmd.uncertainty: LLPR for the energy, the per-atom extrapolation score) flags
PET's errors and its extrapolation, and how a last-layer ensemble would do instead (issue 35, docs/uncertainty.md).

On a trained checkpoint and its training split: the covariances of the training frames' last-layer features, α fitted
on half of the validation frames (mean of err²/σ² = 1) and judged on the other half: the fraction of energy errors
within 1σ and 2σ (68 % and 95 % if calibrated), the Gaussian NLL, rms of err/σ. Then σ per atom and the largest atomic
extrapolation score of structures far from the data, against the judged validation frames' medians.

The alternative measured: a last-layer bootstrap ensemble, K ridge regressions of the training energies on the same
summed features, each on a bootstrap resample of the training frames, σ = the members' spread (scaled by its own α
fitted the same way). It stands for a shallow ensemble of heads, whose members differ only in their last layers.

    python benchmarks/uncertainty_llpr.py                          # models/pet-water-small.ckpt, the SCAN set
    python benchmarks/uncertainty_llpr.py --checkpoint models/pet-water.ckpt --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from machine import metadata  # noqa: E402  (benchmarks/machine.py)
from petmd.batch import Frame, frame_from_atoms
from petmd.checkpoint import load_checkpoint, model_from_checkpoint
from petmd.data import default_data_path, load_frames, split_indices
from petmd.uncertainty import (
    DEFAULT_REGULARIZER,
    calibration_figures,
    frame_features,
    quadratic_form,
    regularized_inverse,
)

ROOT = Path(__file__).resolve().parents[1]


def far_structures(frames: List[Frame], cutoff: float) -> Dict[str, Frame]:
    """Structures far from the data: an isolated molecule (the SCAN set has none) at its usual and at collapsed
    H–O–H angles (where the shipped models have a spurious deep region, examples/gas-phase), the data's first periodic
    liquid frame compressed to 0.85 and stretched to 1.15 of its cell, and with 0.3 Å random displacements."""
    from ase import Atoms

    liquid = next(f for f in frames if f.pbc.all())
    cases = {}
    for angle in (104.5, 60.0, 30.0):
        theta = np.radians(angle)
        atoms = Atoms("OHH", positions=[[0, 0, 0], [0.97, 0, 0], [0.97 * np.cos(theta), 0.97 * np.sin(theta), 0]])
        cases[f"molecule, H–O–H {angle:g}°"] = frame_from_atoms(atoms, cutoff)
    base = Atoms(numbers=liquid.numbers, positions=liquid.positions, cell=liquid.cell, pbc=True)
    for scale in (0.85, 1.15):
        strained = base.copy()
        strained.set_cell(base.cell.array * scale, scale_atoms=True)
        cases[f"liquid, cell × {scale:g}"] = frame_from_atoms(strained, cutoff)
    hot = base.copy()
    hot.positions += np.random.default_rng(0).normal(0, 0.3, hot.positions.shape)
    cases["liquid, 0.3 Å random displacements"] = frame_from_atoms(hot, cutoff)
    cases["liquid frame from the data"] = liquid
    return cases


def baselines(model, frames: List[Frame], indices) -> np.ndarray:
    """The composition baseline Σ_i e_(species i) of each frame (eV)."""
    energies = model.composition_energies.numpy()
    return np.array([energies[model.species_index(torch.from_numpy(frames[i].numbers)).numpy()].sum() for i in indices])


def ensemble_sigma(f_train, e_train, f_eval, members: int, ridge: float, seed: int = 0) -> np.ndarray:
    """Spread of K ridge fits w_k of e_train ≈ f_train w on bootstrap resamples, evaluated on f_eval."""
    rng = np.random.default_rng(seed)
    n, d = f_train.shape
    scale = ridge * np.mean(np.einsum("sd,sd->d", f_train, f_train)) / n
    predictions = []
    for _ in range(members):
        pick = rng.integers(0, n, n)
        a, b = f_train[pick], e_train[pick]
        w = np.linalg.solve(a.T @ a / n + scale * np.eye(d), a.T @ b / n)
        predictions.append(f_eval @ w)
    return np.std(predictions, axis=0)


def judged(errors, raw_sigma, fit, judge, n_atoms) -> tuple:
    alpha = float(np.sqrt(np.mean(errors[fit] ** 2 / raw_sigma[fit] ** 2)))
    sigma = alpha * raw_sigma
    return alpha, calibration_figures(errors[judge] / n_atoms[judge], sigma[judge] / n_atoms[judge])


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "pet-water-small.ckpt")
    parser.add_argument("--data", type=Path, default=None, help="labelled frames (default: the SCAN set)")
    parser.add_argument("--max-frames", type=int, help="the first frames of the data only (a quick check)")
    parser.add_argument("--members", type=int, default=8, help="last-layer ensemble members (default 8)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    state = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(state).eval()  # in its training dtype, as exported
    data = args.data or default_data_path()
    d = state["config"]["data"]
    frames = load_frames(data, model.cutoff, progress=False, stride=d.get("stride", 1), max_frames=args.max_frames)
    fixed = d["validation_indices"] if args.max_frames is None else None  # indices into the whole set
    train, validation = split_indices(len(frames), d["validation_fraction"], d["split_seed"], fixed)
    t = frame_features(model, [frames[i] for i in train])
    structure_inverse = regularized_inverse(t.summed.T @ t.summed, len(train), DEFAULT_REGULARIZER)
    atom_inverse = regularized_inverse(t.atom_second_moment, t.n_atoms, DEFAULT_REGULARIZER)
    v = frame_features(model, [frames[i] for i in validation], extrapolation_metric=atom_inverse)
    w = model.last_layer_weights().detach().numpy()
    exactness = float(np.abs(v.summed @ w + baselines(model, frames, validation) - v.energies).max())
    n_atoms = np.array([frames[i].n_atoms for i in validation])
    errors = v.energies - np.array([frames[i].energy for i in validation])
    order = np.random.default_rng(0).permutation(len(validation))
    fit, judge = order[: len(order) // 2], order[len(order) // 2 :]
    llpr_raw = np.sqrt(quadratic_form(structure_inverse, v.summed))
    alpha, llpr = judged(errors, llpr_raw, fit, judge, n_atoms)
    train_energies = np.array([frames[i].energy for i in train]) - baselines(model, frames, train)
    ensemble_raw = ensemble_sigma(t.summed, train_energies, v.summed, args.members, DEFAULT_REGULARIZER)
    ensemble_alpha, ensemble = judged(errors, ensemble_raw, fit, judge, n_atoms)
    assert v.atom_scores is not None
    atom_scale = float(np.median(v.atom_scores))

    far = far_structures(frames, model.cutoff)
    report = {
        **metadata(__file__, sys.argv),
        "checkpoint": str(args.checkpoint),
        "features": int(len(w)),
        "exactness_eV": exactness,
        "training_frames": len(train),
        "validation_frames_fit": len(fit),
        "validation_frames_judged": len(judge),
        "llpr": {"alpha": alpha, **llpr},
        "ensemble": {"members": args.members, "alpha": ensemble_alpha, **ensemble},
        "validation_atom_score_p99": float(np.percentile(v.atom_scores / atom_scale, 99)),
        "validation_atom_score_max": float(np.max(v.atom_scores / atom_scale)),
        "far": {},
    }
    for name, structure in far.items():
        f = frame_features(model, [structure], extrapolation_metric=atom_inverse)
        assert f.atom_scores is not None
        sigma = alpha * float(np.sqrt(quadratic_form(structure_inverse, f.summed)[0])) / structure.n_atoms
        spread = ensemble_alpha * float(
            ensemble_sigma(t.summed, train_energies, f.summed, args.members, DEFAULT_REGULARIZER)[0]
        )
        spread /= structure.n_atoms
        report["far"][name] = {
            "sigma_meV_per_atom": 1e3 * sigma,
            "ratio_to_median": 1e3 * sigma / llpr["median_sigma_mev_per_atom"],
            "ensemble_ratio_to_median": 1e3 * spread / ensemble["median_sigma_mev_per_atom"],
            "max_atom_score": float(f.atom_scores.max() / atom_scale),
        }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    return report


def print_report(report: dict) -> None:
    print(
        f"{Path(report['checkpoint']).name}: {report['features']} last-layer features (F·w + baseline = E to "
        f"{report['exactness_eV']:.1e} eV); {report['training_frames']} training frames; α fitted on "
        f"{report['validation_frames_fit']} validation frames, judged on {report['validation_frames_judged']}"
    )
    for name in ("llpr", "ensemble"):
        r = report[name]
        print(
            f"  {name:<9} within 1σ {100 * r['within_1_sigma']:3.0f} %, 2σ {100 * r['within_2_sigma']:3.0f} %, "
            f"NLL {r['nll_mev_per_atom']:.2f}, rms z {r['rms_z']:.2f}, median σ {r['median_sigma_mev_per_atom']:.3f} "
            f"meV/atom (median |error| {r['median_abs_error_mev_per_atom']:.3f})"
        )
    print(
        f"  validation atoms' extrapolation score: median 1, 99th percentile "
        f"{report['validation_atom_score_p99']:.1f}, max {report['validation_atom_score_max']:.1f}"
    )
    print(f"  {'structure':<40} {'σ meV/atom':>11} {'× median':>9} {'ensemble ×':>11} {'max score':>10}")
    for name, r in report["far"].items():
        print(
            f"  {name:<40} {r['sigma_meV_per_atom']:11.3f} {r['ratio_to_median']:9.1f} "
            f"{r['ensemble_ratio_to_median']:11.1f} {r['max_atom_score']:10.1f}"
        )


if __name__ == "__main__":
    main()
