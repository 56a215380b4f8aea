"""What `petmd observables` writes: observables.json, one CSV per observable family, PNG figures, and the
one-screen summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np

from ..atomic import atomic_output
from .analyze import _clean
from .figures import Panel, curve_figure, orientation_figure
from .structure import first_shell

RDF_KEYS = ("g_OO", "g_OH", "g_HH")
SCALARS = ("temperature", "density", "potential_energy", "pressure", "conserved_drift", "diffusion_O")


def _csv(path: Path, names, columns) -> Path:
    np.savetxt(
        path,
        np.column_stack([np.asarray(c, float) for c in columns]),
        delimiter=",",
        header=",".join(names),
        comments="",
        fmt="%.8g",
    )
    return path


def write_json(result: dict, path: Path) -> Path:
    """Atomically: a killed run never leaves half a file that compare would then misread."""
    with atomic_output(path, "w") as f:
        json.dump(_clean(result), f, indent=1)
    return path


def write_outputs(result: dict, directory) -> List[Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(result, out / "observables.json")]
    rdfs = [(k, result[k]) for k in RDF_KEYS if k in result]
    if rdfs:
        names, columns = ["r_A"], [rdfs[0][1]["r"]]
        for key, entry in rdfs:
            names += [key, f"{key}_err", f"n_{key[2:]}", f"n_{key[2:]}_err"]
            columns += [entry["g"], entry["err"], entry["coordination"], entry["coordination_err"]]
        written.append(_csv(out / "rdf.csv", names, columns))
        written.append(
            curve_figure(
                [
                    Panel(
                        f"g_{k[2:]}", "r (Å)", "g(r)", [("", e["r"], e["g"], e["err"])], reference=1.0, ylim_beyond=1.5
                    )
                    for k, e in rdfs
                ],
                out / "rdf.png",
            )
        )
    if "c_L" in result:
        cl, ct = result["c_L"], result["c_T"]
        written.append(
            _csv(
                out / "dipole.csv",
                ["r_A", "c_L", "c_L_err", "c_T", "c_T_err", "pairs"],
                [cl["r"], cl["c"], cl["err"], ct["c"], ct["err"], cl["pairs"]],
            )
        )
        written.append(
            curve_figure(
                [
                    Panel(
                        "dipole correlations (O–O pairs)",
                        "r (Å)",
                        "c(r)",
                        [("c_L", cl["r"], cl["c"], cl["err"]), ("c_T", ct["r"], ct["c"], ct["err"])],
                        reference=0.0,
                    )
                ],
                out / "dipole.png",
            )
        )
    if "orientation_F" in result:
        entry = result["orientation_F"]
        cos_edges, phi_edges = np.asarray(entry["cos_theta_edges"]), np.asarray(entry["phi_edges"])
        cos_mid, phi_mid = 0.5 * (cos_edges[1:] + cos_edges[:-1]), 0.5 * (phi_edges[1:] + phi_edges[:-1])
        c, p = np.meshgrid(cos_mid, phi_mid, indexing="ij")
        written.append(
            _csv(
                out / "orientation_F.csv",
                ["cos_theta", "phi_rad", "F_kT", "err_kT"],
                [c.ravel(), p.ravel(), np.ravel(entry["F"]), np.ravel(entry["err"])],
            )
        )
        written.append(orientation_figure([("lab-frame F(cos θ, φ) of u", entry)], out / "orientation_F.png"))
    if "orientation_moments" in result:
        entry = result["orientation_moments"]
        rows = zip(entry["component"], np.ravel(entry["value"]), np.ravel(entry["err"]))
        path = out / "orientation_moments.csv"
        path.write_text("component,value,err\n" + "".join(f"{c},{v:.8g},{e:.8g}\n" for c, v, e in rows))
        written.append(path)
    panels = []
    if "msd_O" in result:
        m = result["msd_O"]
        written.append(_csv(out / "msd.csv", ["t_ps", "msd_A2", "err_A2"], [m["t"], m["msd"], m["err"]]))
        panels.append(Panel("oxygen MSD", "t (ps)", "MSD (Å²)", [("", m["t"], m["msd"], m["err"])]))
    if "c_uu" in result:
        c = result["c_uu"]
        written.append(_csv(out / "c_uu.csv", ["t_ps", "c_uu", "err"], [c["t"], c["c"], c["err"]]))
        panels.append(
            Panel(
                "orientation autocorrelation", "t (ps)", "⟨u(0)·u(t)⟩", [("", c["t"], c["c"], c["err"])], reference=0.0
            )
        )
    if panels:
        written.append(curve_figure(panels, out / "dynamics.png"))
    if "angular_momentum" in result:
        a = result["angular_momentum"]
        written.append(
            _csv(
                out / "angular_momentum.csv",
                ["t_ps", "Lx", "Ly", "Lz", "L_norm", "torque_x", "torque_y", "torque_z", "torque_norm"],
                [a["t"], *np.asarray(a["L"]).T, a["L_norm"], *np.asarray(a["torque"]).T, a["torque_norm"]],
            )
        )
        written.append(
            curve_figure(
                [
                    Panel(
                        "|L| about the centre of mass", "t (ps)", "|L| (amu Å²/ps)", [("", a["t"], a["L_norm"], None)]
                    ),
                    Panel("|torque|", "t (ps)", "|τ| (eV)", [("", a["t"], a["torque_norm"], None)]),
                ],
                out / "angular_momentum.png",
            )
        )
    return written


def _pm(entry: dict, digits: str = ".6g") -> str:
    if entry is None or entry.get("value") is None:
        return "—"
    err = entry.get("err")
    return f"{entry['value']:{digits}} ± {err:.2g}" if err is not None else f"{entry['value']:{digits}} (no error)"


def summary(result: dict) -> str:
    system = result.get("system", {})
    lines = []
    if "n_atoms" in system:
        composition = " ".join(f"{s}{n}" for s, n in system["composition"].items())
        span = f", {system['time_span_ps']:.4g} ps" if system.get("time_span_ps") is not None else ""
        lines.append(
            f"{system['n_frames']} frames of {system['n_atoms']} atoms ({composition}){span}; "
            f"errors: standard errors from {result['n_blocks']} blocks"
        )
    for key, after in (("g_OO", 2.0), ("g_OH", 1.3), ("g_HH", 1.3)):
        if key in result and np.any(np.asarray(result[key]["r"]) > after + 0.5):
            e = result[key]
            peak, minimum, coordination = first_shell(e, after)
            k = int(np.argmin(np.abs(np.asarray(e["r"]) - peak)))
            err = e["err"][k] if e["err"][k] is not None else float("nan")
            lines.append(
                f"  {key}: first peak beyond {after:g} Å at {peak:.3f} Å (g = {e['g'][k]:.3f} ± {err:.2g}), "
                f"minimum at {minimum:.3f} Å, coordination there {coordination:.3f}"
                + (f"; closest pair {e['closest']:.3f} Å" if e.get("closest") is not None else "")
            )
    if "c_L" in result:
        lines.append(f"  c_L, c_T: {int(np.nansum(result['c_L']['pairs']))} O–O pairs (dipole.csv, dipole.png)")
    if "orientation_F" in result:
        f = np.asarray(result["orientation_F"]["F"], float)
        lines.append(
            f"  orientation F(cos θ, φ): max |F| = {np.nanmax(np.abs(f)):.3f} kT over "
            f"{f.size} bins ({int(result['orientation_F']['samples'])} samples)"
        )
    if "orientation_moments" in result:
        m = result["orientation_moments"]
        worst = int(np.nanargmax(np.abs(np.asarray(m["value"], float))))
        lines.append(
            f"  orientation moments ⟨u⟩, ⟨Q⟩ (orientation_moments.csv): largest {m['component'][worst]} = "
            f"{_pm({'value': m['value'][worst], 'err': m['err'][worst]})} (0 for an isotropic liquid, on average "
            "over many dielectric relaxation times)"
        )
    units = {
        "temperature": "K",
        "density": "g/cm³",
        "potential_energy": "eV/atom",
        "pressure": "bar",
        "conserved_drift": "meV/atom/ps",
        "diffusion_O": "Å²/ps",
    }
    for key in SCALARS:
        if result.get(key):
            extra = f" ({result[key]['quantity']})" if "quantity" in result[key] else ""
            lines.append(f"  {key}: {_pm(result[key])} {units[key]}{extra}")
            for why in ("warning", "why_missing"):
                if result[key].get(why):
                    lines.append(f"    {why.replace('_', ' ')}: {result[key][why]}")
    if "angular_momentum" in result:
        a = result["angular_momentum"]
        lines.append(
            f"  |L| drift {_pm(a['L_norm_drift'])} amu Å²/ps²; mean |torque| {_pm(a.get('mean_abs_torque'))} eV"
        )
    if "molecules" in result:
        m = result["molecules"]
        lines.append(
            f"  molecules: {m['n_oxygen']} O; proton hops {m['proton_hops']}; O without exactly two H "
            f"(summed over frames) {m['not_whole_molecule_frames']}"
            + (f", the first at {m['first_not_whole_ps']:.3f} ps" if m.get("first_not_whole_ps") is not None else "")
        )
    for note in result.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
