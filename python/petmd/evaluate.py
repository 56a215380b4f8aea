"""`petmd eval`: energy and force errors of a model on labelled structures, overall and per group."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from .batch import batches_by_atom_budget, collate
from .data import INFO_GROUP_KEYS, load_frames
from .errors import PetmdError
from .loading import load_model
from .objective import EV_PER_A3_IN_GPA, stress_residual
from .tables import group_table
from .uncertainty import calibration_figures, calibration_plot


def _summary(e_err: List[float], f_err: List[np.ndarray], s_err: Optional[List[np.ndarray]] = None) -> Dict[str, Any]:
    signed = np.asarray(e_err)
    e = np.abs(signed)
    f = np.abs(np.concatenate([x.ravel() for x in f_err])) if f_err else np.zeros(0)
    stress = {}
    if s_err:  # frames with a stress label; components of σ_model − σ_reference in eV/Å³
        s = np.abs(np.concatenate([x.ravel() for x in s_err]))
        stress = {
            "n_stress_frames": len(s_err),
            "stress_mae_gpa": EV_PER_A3_IN_GPA * float(s.mean()),
            "stress_rmse_gpa": EV_PER_A3_IN_GPA * float(np.sqrt((s**2).mean())),
            "stress_mae_mev_per_A3": 1e3 * float(s.mean()),
        }
    return stress | {
        "n_frames": int(len(e)),
        "energy_mae_mev_per_atom": 1e3 * float(e.mean()) if len(e) else math.nan,
        "energy_rmse_mev_per_atom": 1e3 * float(np.sqrt((e**2).mean())) if len(e) else math.nan,
        # model minus reference: an offset common to a group (which no force or relative energy feels) shows here
        # and not in the spread that MAE and RMSE mix it with
        "energy_mean_error_mev_per_atom": 1e3 * float(signed.mean()) if len(e) else math.nan,
        "force_mae_mev_per_A": 1e3 * float(f.mean()) if len(f) else math.nan,
        "force_rmse_mev_per_A": 1e3 * float(np.sqrt((f**2).mean())) if len(f) else math.nan,
    }


# modes whose batched call gives the model's prediction (ECSE acts per atom); grid:G and random average rotated
# copies of one structure inside the exported forward, a structure per call
BATCHED_MODES = ("none", "ecse")
# ECSE runs every atom's layers once per local frame (~6 in water): its batches hold fewer atoms for the same memory
# and speed (docs/benchmarks.md, "petmd eval")
ECSE_FRAMES_PER_ATOM = 6


def evaluate(
    model_path,
    data_path,
    energy_key="energy",
    forces_key="forces",
    indices: Optional[Sequence[int]] = None,
    atoms_per_batch: int = 4000,
    progress: bool = True,
    stress_key: str = "stress",
    virial_key: str = "virial",
    uncertainty: bool = False,
    calibration_plot_path=None,
    symmetrize: Optional[str] = None,
) -> dict:
    """Errors of ``model_path`` on the labelled frames of ``data_path``, in its stored symmetrization mode or in
    ``symmetrize`` (none, random, grid:G, ecse); ``uncertainty`` adds how well the model's energy uncertainty
    describes its energy errors (petmd.uncertainty.calibration_figures, and a plot when a path is given)."""
    model = load_model(model_path)
    if symmetrize is not None:
        model.set_symmetrization(symmetrize)
    if uncertainty:
        model.require_uncertainty("--uncertainty")
        if model.symmetrize not in BATCHED_MODES:
            raise PetmdError(
                f"--uncertainty judges the network's own energies; mode {model.symmetrize} averages rotated copies: "
                "evaluate the uncertainty without --symmetrize (or with ecse)"
            )
    frames = load_frames(
        data_path,
        model.cutoff,
        energy_key,
        forces_key,
        model_numbers=model.atomic_numbers,
        progress=progress,
        indices=indices,
        stress_key=stress_key,
        virial_key=virial_key,
    )
    e_err: List[float] = []
    f_err: List[np.ndarray] = []
    s_err: Dict[int, np.ndarray] = {}  # frame number in e_err → stress error (eV/Å³)
    sigmas: List[float] = []  # energy uncertainty per atom (eV), with uncertainty
    groups: Dict[str, List[int]] = defaultdict(list)
    budget = atoms_per_batch // ECSE_FRAMES_PER_ATOM if model.symmetrize == "ecse" else atoms_per_batch
    batches = batches_by_atom_budget(frames, range(len(frames)), budget)
    for group in tqdm(batches, desc="evaluating", unit="batch", disable=not progress, leave=False):
        batch = collate([frames[i] for i in group])
        if model.symmetrize in BATCHED_MODES:
            out = model.batched(batch, compute_virial=batch.has_virial is not None, with_uncertainty=uncertainty)
        else:
            out = model.each([frames[i] for i in group])
        energy = out["energy"].detach().numpy()
        forces = out["forces"].detach().numpy()
        if batch.has_virial is not None:
            stress = stress_residual(out, batch).numpy()
            labelled = [k for k, idx in enumerate(group) if frames[idx].virial is not None]
            for row, k in enumerate(labelled):
                s_err[len(e_err) + k] = stress[row]
        offset = 0
        for k, idx in enumerate(group):
            f = frames[idx]
            e_err.append((energy[k] - f.energy) / f.n_atoms)
            if uncertainty:
                sigmas.append(float(out["energy_uncertainty"][k]) / f.n_atoms)
            f_err.append(forces[offset : offset + f.n_atoms] - f.forces)
            offset += f.n_atoms
            for key in INFO_GROUP_KEYS:
                if key in f.info:
                    groups[f"{key}={f.info[key]}"].append(len(e_err) - 1)
    result = _summary(e_err, f_err, list(s_err.values()))
    result["by_group"] = {
        name: _summary(
            [e_err[i] for i in members], [f_err[i] for i in members], [s_err[i] for i in members if i in s_err]
        )
        for name, members in sorted(groups.items())
    }
    result["model"] = str(model_path)
    result["data"] = str(data_path)
    result["symmetrize"] = model.symmetrize
    if uncertainty:
        result["uncertainty"] = calibration_figures(np.array(e_err), np.array(sigmas))
        if calibration_plot_path is not None:
            calibration_plot(np.array(e_err), np.array(sigmas), calibration_plot_path, f"{model_path} on {data_path}")
            result["uncertainty"]["plot"] = str(calibration_plot_path)
    return result


def format_table(result: dict) -> str:
    columns = [f"{'E MAE':>8}", f"{'E RMSE':>8}", f"{'E mean':>8}", f"{'F MAE':>8}", f"{'F RMSE':>8}"]
    units = "energies in meV/atom (E mean: model minus reference, signed), forces in meV/Å (per component)"
    with_stress = "stress_mae_gpa" in result
    if with_stress:
        columns += [f"{'S frames':>8}", f"{'S MAE':>8}", f"{'S RMSE':>8}"]
        units += ", stress in GPa (per component, frames with a stress label)"

    def row(r: dict) -> str:
        cells = (
            f"{r['energy_mae_mev_per_atom']:>8.3f} {r['energy_rmse_mev_per_atom']:>8.3f} "
            f"{r['energy_mean_error_mev_per_atom']:>+8.3f} "
            f"{r['force_mae_mev_per_A']:>8.1f} {r['force_rmse_mev_per_A']:>8.1f}"
        )
        if with_stress and "stress_mae_gpa" in r:
            cells += f" {r['n_stress_frames']:>8d} {r['stress_mae_gpa']:>8.4f} {r['stress_rmse_gpa']:>8.4f}"
        return cells

    mode = f" (symmetrize {result['symmetrize']})" if result.get("symmetrize", "none") != "none" else ""
    table = group_table([f"model {result['model']}{mode} on {result['data']}", units], columns, row, result)
    if "uncertainty" in result:
        u = result["uncertainty"]
        table += (
            f"\nenergy uncertainty on {u['n_frames']} frames: errors within 1σ {100 * u['within_1_sigma']:.0f} %, "
            f"2σ {100 * u['within_2_sigma']:.0f} % (calibrated: 68, 95 %); rms error/σ {u['rms_z']:.2f}; Gaussian NLL "
            f"{u['nll_mev_per_atom']:.2f} (meV/atom); median σ {u['median_sigma_mev_per_atom']:.3f}, median |error| "
            f"{u['median_abs_error_mev_per_atom']:.3f} meV/atom"
        )
        if "plot" in u:
            table += f"\ncalibration plot: {u['plot']}"
    return table
