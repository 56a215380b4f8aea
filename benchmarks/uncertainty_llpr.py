#!/usr/bin/env python
"""A first measurement for issue 35: how well does last-layer prediction rigidity (LLPR, Bigi et al. 2024) flag
PET's errors and its extrapolation, on a trained checkpoint, before anything is built into the model?

PET's energy is linear in its heads' last layers: E_s − baseline_s = Σ_i f_i · w, with f_i the scaled inputs of the
final Linear of every layer's central head (atom i) and of its bond head (edges of i, weighted by f_c), plus ones
for their biases. LLPR takes the covariance of the training structures' F_s = Σ_i f_i, C = Σ_s F_s F_sᵀ / n, and
σ_s² = α² F_sᵀ (C + ς² I)⁻¹ F_s (per atom of s: / N_s²), α fitted on half of the validation frames (mean of err²/σ²
= 1) and judged on the other half: the fraction of energy errors within 1σ and 2σ (68 % and 95 % if calibrated),
the Gaussian NLL, and σ on structures far from the data against the validation median.

    python benchmarks/uncertainty_llpr.py                          # models/pet-water-small.ckpt, the SCAN set
    python benchmarks/uncertainty_llpr.py --checkpoint models/pet-water.ckpt --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List

import numpy as np
import torch

from machine import metadata  # noqa: E402  (benchmarks/machine.py)
from petmd.batch import Frame, batches_by_atom_budget, collate, frame_from_atoms
from petmd.checkpoint import load_checkpoint, model_from_checkpoint
from petmd.data import default_data_path, load_frames, split_indices

ROOT = Path(__file__).resolve().parents[1]


def features(model, frames: List[Frame], atoms_per_batch: int = 4000) -> tuple:
    """(F [n_frames, D] summed features, the model's E − baseline, the baseline; per frame) through forward hooks
    on the heads' final Linear layers: their inputs are the last-layer features."""
    captured: list = []
    hooks = []
    for layer in model.layers:
        for head in (layer.central_head, layer.bond_head):
            hooks.append(head.net[-1].register_forward_hook(lambda m, inputs, out: captured.append(inputs[0])))
    rows, energies, baselines = [], [], []
    try:
        for group in batches_by_atom_budget(frames, range(len(frames)), atoms_per_batch):
            captured.clear()
            batch = collate([frames[i] for i in group])
            inputs = batch.model_inputs()
            with torch.no_grad():
                out = model(**inputs, compute_forces=False)
                edge_vectors = model.edge_vectors(inputs["positions"], inputs["edge_index"], inputs["shift_vectors"])
                _, _, fc, _ = model.edge_geometry(edge_vectors)
            edge_structure = batch.structure.index_select(0, batch.edge_index[0])
            per_structure = []
            for k in range(len(model.layers)):
                central, bond = captured[2 * k].double(), captured[2 * k + 1].double()
                ones_c = torch.ones(central.shape[0], 1, dtype=torch.float64)
                central_f = torch.zeros(batch.n_structures, central.shape[1] + 1, dtype=torch.float64)
                central_f.index_add_(0, batch.structure, torch.cat([central, ones_c], dim=1))
                weighted = fc.double().unsqueeze(1) * torch.cat([bond, torch.ones(bond.shape[0], 1).double()], dim=1)
                bond_f = torch.zeros(batch.n_structures, bond.shape[1] + 1, dtype=torch.float64)
                bond_f.index_add_(0, edge_structure, weighted)
                per_structure += [central_f, bond_f]
            rows.append(float(model.energy_scale) * torch.cat(per_structure, dim=1))
            baseline = torch.zeros(batch.n_structures, dtype=torch.float64).index_add_(
                0, batch.structure, model.composition_energies.index_select(0, model.species_index(batch.numbers))
            )
            energies.append(out["energy"] - baseline)
            baselines.append(baseline)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(rows).numpy(), torch.cat(energies).numpy(), torch.cat(baselines).numpy()


def last_layer_weights(model) -> np.ndarray:
    parts = []
    for layer in model.layers:
        for head in (layer.central_head, layer.bond_head):
            final = head.net[-1]
            parts += [final.weight.detach().double().ravel(), final.bias.detach().double().ravel()]
    return torch.cat(parts).numpy()


def far_structures(frames: List[Frame], cutoff: float) -> dict:
    """Structures far from the data: an isolated molecule with a collapsed H–O–H angle, liquid water compressed
    to 0.85 of its cell, and a liquid frame with 0.3 Å random displacements (much hotter than 300 K); the liquid is
    the data's first periodic frame."""
    from ase import Atoms

    liquid = next(f for f in frames if f.pbc.all())
    cases = {}
    for angle in (104.5, 60.0, 30.0):
        theta = np.radians(angle)
        atoms = Atoms("OHH", positions=[[0, 0, 0], [0.97, 0, 0], [0.97 * np.cos(theta), 0.97 * np.sin(theta), 0]])
        cases[f"molecule, H–O–H {angle:g}°"] = frame_from_atoms(atoms, cutoff)
    base = Atoms(numbers=liquid.numbers, positions=liquid.positions, cell=liquid.cell, pbc=True)
    compressed = base.copy()
    compressed.set_cell(base.cell.array * 0.85, scale_atoms=True)
    cases["liquid compressed to 0.85 of the cell"] = frame_from_atoms(compressed, cutoff)
    hot = base.copy()
    hot.positions += np.random.default_rng(0).normal(0, 0.3, hot.positions.shape)
    cases["liquid, 0.3 Å random displacements"] = frame_from_atoms(hot, cutoff)
    cases["liquid frame from the data"] = liquid
    return cases


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "pet-water-small.ckpt")
    parser.add_argument("--data", type=Path, default=None, help="labelled frames (default: the SCAN set)")
    parser.add_argument("--max-frames", type=int, help="the first frames of the data only (a quick check)")
    parser.add_argument("--regularizer", type=float, default=1e-6, help="ς² relative to C's mean diagonal")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    state = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(state).double().eval()
    data = args.data or default_data_path()
    d = state["config"]["data"]
    frames = load_frames(data, model.cutoff, progress=False, stride=d.get("stride", 1), max_frames=args.max_frames)
    fixed = d["validation_indices"] if args.max_frames is None else None  # indices into the whole set
    train, validation = split_indices(len(frames), d["validation_fraction"], d["split_seed"], fixed)
    f_train, _, _ = features(model, [frames[i] for i in train])
    f_val, e_val, b_val = features(model, [frames[i] for i in validation])
    w = last_layer_weights(model)
    exactness = float(np.abs(f_val @ w - e_val).max())
    covariance = f_train.T @ f_train / len(train)
    covariance += args.regularizer * np.mean(np.diag(covariance)) * np.eye(len(w))
    inverse = np.linalg.inv(covariance)
    n_atoms = np.array([frames[i].n_atoms for i in validation])
    reference = np.array([frames[i].energy for i in validation])
    errors = (e_val + b_val - reference) / n_atoms  # model minus reference, eV/atom
    raw_sigma = np.sqrt(np.einsum("sd,de,se->s", f_val, inverse, f_val)) / n_atoms
    rng = np.random.default_rng(0)
    order = rng.permutation(len(validation))
    fit, judge = order[: len(order) // 2], order[len(order) // 2 :]
    alpha = float(np.sqrt(np.mean(errors[fit] ** 2 / raw_sigma[fit] ** 2)))
    sigma = alpha * raw_sigma
    z = np.abs(errors[judge]) / sigma[judge]
    nll = float(np.mean(0.5 * np.log(2 * np.pi * sigma[judge] ** 2) + 0.5 * z**2))
    far = far_structures(frames, model.cutoff)
    f_far, _, _ = features(model, list(far.values()))
    n_far = np.array([f.n_atoms for f in far.values()])
    sigma_far = alpha * np.sqrt(np.einsum("sd,de,se->s", f_far, inverse, f_far)) / n_far
    median = float(np.median(sigma[judge]))
    report = {
        **metadata(__file__, sys.argv),
        "checkpoint": str(args.checkpoint),
        "features": len(w),
        "exactness_eV": exactness,
        "alpha": alpha,
        "validation_frames_judged": len(judge),
        "within_1_sigma": float(np.mean(z < 1)),
        "within_2_sigma": float(np.mean(z < 2)),
        "nll": nll,
        "median_sigma_meV_per_atom": 1e3 * median,
        "median_abs_error_meV_per_atom": 1e3 * float(np.median(np.abs(errors[judge]))),
    }
    report["far"] = {
        name: {"sigma_meV_per_atom": 1e3 * value, "ratio_to_median": value / median}
        for name, value in zip(far, sigma_far)
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{args.checkpoint.name}: {len(w)} last-layer features; Σ f·w gives E − baseline to {exactness:.1e} eV")
        print(
            f"validation ({len(judge)} frames judged, α = {alpha:.3g} fitted on {len(fit)}): within 1σ "
            f"{100 * report['within_1_sigma']:.0f} %, 2σ {100 * report['within_2_sigma']:.0f} %, NLL {nll:.2f}; "
            f"median σ {report['median_sigma_meV_per_atom']:.3f} meV/atom, median |error| "
            f"{report['median_abs_error_meV_per_atom']:.3f}"
        )
        for name, entry in report["far"].items():
            sigma_far = entry["sigma_meV_per_atom"]
            print(f"  {name:<40} σ {sigma_far:10.3f} meV/atom  {entry['ratio_to_median']:8.1f}× median")
    return report


if __name__ == "__main__":
    main()
