"""`petmd compare`: observables of several runs against the first, with statistical tests, overlay plots and one
Markdown report.

Scalars: z = Δ / √(e_A² + e_B²), turned into a p-value with Student's t at the Welch–Satterthwaite degrees of freedom
(block errors from few blocks are themselves uncertain). Curves and maps: the same per point; the curve's p is the
smallest point p times the number of points (Bonferroni), which stays valid when neighbouring points are correlated
(MSD and c_uu at successive lags are nearly the same number) where a χ² over points would not. χ²/points is reported
too, as a measure of overall agreement. The verdict is "differs" when p is below the two-sided normal tail at the
threshold (3σ: p < 0.0027)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from scipy import stats

from ..errors import PetmdError
from .analyze import _clean, load_observables
from .figures import Panel, curve_figure, orientation_figure

CURVES = {  # key: (x name, y name, x label, y label, reference line, panel title)
    "g_OO": ("r", "g", "r (Å)", "g(r)", 1.0, "g_OO"),
    "g_OH": ("r", "g", "r (Å)", "g(r)", 1.0, "g_OH"),
    "g_HH": ("r", "g", "r (Å)", "g(r)", 1.0, "g_HH"),
    "c_L": ("r", "c", "r (Å)", "c_L(r)", 0.0, "c_L"),
    "c_T": ("r", "c", "r (Å)", "c_T(r)", 0.0, "c_T"),
    "msd_O": ("t", "msd", "t (ps)", "MSD (Å²)", None, "oxygen MSD"),
    "c_uu": ("t", "c", "t (ps)", "⟨u(0)·u(t)⟩", 0.0, "c_uu"),
}
SCALARS = ("diffusion_O", "density", "potential_energy", "pressure", "temperature", "conserved_drift")
FIGURES = {"rdf.png": ("g_OO", "g_OH", "g_HH"), "dipole.png": ("c_L", "c_T"), "dynamics.png": ("msd_O", "c_uu")}


def _welch(delta, err_a, err_b, n_a: int, n_b: int):
    """(z, p) for differences with block-average standard errors from n_a and n_b blocks."""
    delta, err_a, err_b = (np.asarray(x, float) for x in (delta, err_a, err_b))
    sigma2 = err_a**2 + err_b**2
    with np.errstate(divide="ignore", invalid="ignore"):
        z = delta / np.sqrt(sigma2)
        dof = sigma2**2 / (err_a**4 / max(n_a - 1, 1) + err_b**4 / max(n_b - 1, 1))
    p = 2.0 * stats.t.sf(np.abs(z), np.maximum(dof, 1.0))
    return z, p


def as_floats(values) -> np.ndarray:
    """A JSON number, list or nested list as floats, null (NaN or inf when written) as NaN."""
    return np.array([np.nan if v is None else v for v in np.ravel(np.asarray(values, dtype=object))], float).reshape(
        np.shape(values)
    )


def _values(entry: dict, name: str) -> np.ndarray:
    return as_floats(entry[name])


def _curve_test(a: dict, b: dict, x_name: Optional[str], y_name: str) -> Optional[dict]:
    ya, ea, yb, eb = _values(a, y_name), _values(a, "err"), _values(b, y_name), _values(b, "err")
    if x_name is not None:
        xa, xb = _values(a, x_name), _values(b, x_name)
        if len(xa) != len(xb) or not np.allclose(xa, xb, rtol=1e-6, atol=1e-9):
            lo, hi = max(xa.min(), xb.min()), min(xa.max(), xb.max())
            keep = (xa >= lo) & (xa <= hi)  # compare on the common range, B interpolated onto A's points
            xa, ya, ea = xa[keep], ya[keep], ea[keep]
            yb, eb = np.interp(xa, xb, yb), np.interp(xa, xb, eb)
    elif ya.shape != yb.shape:
        return None
    ya, ea, yb, eb = (np.ravel(v) for v in (ya, ea, yb, eb))
    usable = np.isfinite(ya) & np.isfinite(yb) & np.isfinite(ea) & np.isfinite(eb) & ((ea > 0) | (eb > 0))
    if not usable.any():
        return None
    z, p = _welch(yb[usable] - ya[usable], ea[usable], eb[usable], a.get("n_blocks", 5), b.get("n_blocks", 5))
    z_eq = stats.norm.isf(np.clip(p, 1e-300, 1.0) / 2.0)
    chi2 = float(np.sum(z_eq**2))
    worst = int(np.argmin(p))
    where = (
        float(_values(a, x_name)[np.flatnonzero(usable)[worst]])
        if x_name is not None and np.ndim(a[x_name]) == 1 and len(a[x_name]) == len(np.ravel(ya))
        else None
    )
    return {
        "points": int(usable.sum()),
        "chi2": chi2,
        "p": float(min(1.0, p[worst] * usable.sum())),
        "max_abs_z": float(abs(z[worst])),
        "at": where,
        "rms_difference": float(np.sqrt(np.mean((yb[usable] - ya[usable]) ** 2))),
    }


def _scalar_test(a: dict, b: dict) -> Optional[dict]:
    if a.get("value") is None or b.get("value") is None or a.get("err") is None or b.get("err") is None:
        return None
    z, p = _welch(b["value"] - a["value"], a["err"], b["err"], a.get("n_blocks", 5), b.get("n_blocks", 5))
    return {
        "a": a["value"],
        "a_err": a["err"],
        "b": b["value"],
        "b_err": b["err"],
        "difference": b["value"] - a["value"],
        "combined_err": float(np.hypot(a["err"], b["err"])),
        "z": float(z),
        "p": float(p),
        "unit": a.get("unit"),
    }


def _fit_mismatch(a: dict, b: dict) -> dict:
    """A slope fitted over different lag windows (D from the MSD of runs of different lengths, or different --fit)
    is a different quantity, not a second sample of the same one: its difference says nothing about the runs."""
    fa, fb = a.get("fit_ps"), b.get("fit_ps")
    if fa is None or fb is None or np.allclose(fa, fb, rtol=1e-3, atol=1e-6):
        return {}
    return {
        "not_comparable": f"fitted over {fa[0]:.3g}–{fa[1]:.3g} ps against {fb[0]:.3g}–{fb[1]:.3g} ps of lag; "
        "give both runs the same petmd observables --fit"
    }


def conditions_differ(a: dict, b: dict) -> List[str]:
    """What makes two runs different systems rather than two samples of one: composition, temperature, density
    (constant-volume runs) or target pressure (constant-pressure runs)."""
    sa, sb = a.get("system", {}), b.get("system", {})
    problems = []
    if sa.get("composition") and sb.get("composition") and sa["composition"] != sb["composition"]:
        problems.append(f"composition {sa['composition']} vs {sb['composition']}")
    ta, tb = sa.get("target_temperature_K"), sb.get("target_temperature_K")
    if ta is not None and tb is not None:
        if abs(ta - tb) > 0.5:
            problems.append(f"thermostat target temperature {ta:g} K vs {tb:g} K")
    elif a.get("temperature") and b.get("temperature"):
        test = _scalar_test(a["temperature"], b["temperature"])
        if test and abs(test["z"]) > 3 and abs(test["difference"]) > 0.01 * abs(test["a"]):
            problems.append(
                f"temperature {test['a']:.1f} ± {test['a_err']:.1f} K vs {test['b']:.1f} ± {test['b_err']:.1f} K"
            )
    if sa.get("constant_volume") and sb.get("constant_volume") and a.get("density") and b.get("density"):
        da, db = a["density"]["value"], b["density"]["value"]
        if abs(da - db) > 0.002 * da:
            problems.append(f"density {da:.4f} vs {db:.4f} g/cm³ (constant-volume runs)")
    pa, pb = sa.get("target_pressure_bar"), sb.get("target_pressure_bar")
    if pa is not None and pb is not None and abs(pa - pb) > 1e-6 * max(1.0, abs(pa)):
        problems.append(f"barostat target pressure {pa:g} vs {pb:g} bar")
    return problems


def compare_runs(
    directories: Sequence[str], threshold: float = 3.0, force: bool = False, names: Optional[Sequence[str]] = None
) -> dict:
    if len(directories) < 2:
        raise PetmdError("compare needs at least two runs (folders written by petmd observables)")
    names = list(names) if names else [Path(d).name or str(d) for d in directories]
    if len(names) != len(directories):
        raise PetmdError(f"--names gives {len(names)} labels for {len(directories)} runs")
    runs = [load_observables(d) for d in directories]
    alpha = float(2.0 * stats.norm.sf(threshold))
    refused = {}
    for name, run in zip(names[1:], runs[1:]):
        problems = conditions_differ(runs[0], run)
        if problems:
            refused[name] = problems
    if refused and not force:
        text = "; ".join(f"{names[0]} vs {name}: {', '.join(p)}" for name, p in refused.items())
        raise PetmdError(f"the runs are not the same system ({text}); compare them anyway with --force")
    comparisons = []
    for name, run in zip(names[1:], runs[1:]):
        rows = []
        for key in SCALARS:
            if key in runs[0] and key in run and runs[0][key] and run[key]:
                if (
                    key == "density"
                    and runs[0].get("system", {}).get("constant_volume")
                    and run.get("system", {}).get("constant_volume")
                ):
                    continue  # fixed by the set-up, not an outcome
                test = _scalar_test(runs[0][key], run[key])
                if test:
                    rows.append({"observable": key, "kind": "scalar", **test, **_fit_mismatch(runs[0][key], run[key])})
        for key, (x_name, y_name, *_rest) in CURVES.items():
            if key in runs[0] and key in run:
                test = _curve_test(runs[0][key], run[key], x_name, y_name)
                if test:
                    rows.append({"observable": key, "kind": "curve", **test})
        if "orientation_F" in runs[0] and "orientation_F" in run:
            test = _curve_test(runs[0]["orientation_F"], run["orientation_F"], None, "F")
            if test:
                rows.append({"observable": "orientation_F", "kind": "map", **test})
        if "orientation_moments" in runs[0] and "orientation_moments" in run:
            test = _curve_test(runs[0]["orientation_moments"], run["orientation_moments"], None, "value")
            if test:
                rows.append({"observable": "orientation_moments", "kind": "moments", **test})
        if "angular_momentum" in runs[0] and "angular_momentum" in run:
            for sub in ("L_norm_drift", "mean_abs_torque"):
                a, b = runs[0]["angular_momentum"].get(sub), run["angular_momentum"].get(sub)
                test = _scalar_test(a, b) if a and b else None
                if test:
                    rows.append({"observable": f"angular_momentum.{sub}", "kind": "scalar", **test})
        for row in rows:
            if "not_comparable" in row:
                row["verdict"] = f"not comparable: {row['not_comparable']}"
            else:
                row["verdict"] = "differs" if row["p"] < alpha else "consistent"
        comparisons.append(
            {"reference": names[0], "run": name, "conditions_differ": refused.get(name, []), "rows": rows}
        )
    result = {
        "runs": names,
        "directories": [str(d) for d in directories],
        "threshold_sigma": threshold,
        "alpha": alpha,
        "comparisons": comparisons,
    }
    return {"json": _clean(result), "text": _text(result), "runs": runs}


def _fmt(value, err=None) -> str:
    if value is None:
        return "—"
    return f"{value:.4g} ± {err:.2g}" if err is not None else f"{value:.4g}"


def _row_cells(row: dict) -> List[str]:
    if row["kind"] == "scalar":
        return [
            row["observable"],
            _fmt(row["a"], row["a_err"]),
            _fmt(row["b"], row["b_err"]),
            _fmt(row["difference"], row["combined_err"]),
            f"{abs(row['z']):.2f}",
            f"{row['p']:.2g}",
            row["verdict"],
        ]
    at = f" at {row['at']:.3g}" if row.get("at") is not None else ""
    return [
        row["observable"],
        f"{row['kind']}, {row['points']} points",
        "",
        f"rms {row['rms_difference']:.3g}",
        f"max {row['max_abs_z']:.2f}{at}",
        f"{row['p']:.2g} (χ²/points {row['chi2'] / row['points']:.2f})",
        row["verdict"],
    ]


HEADER = ["observable", "reference", "run", "difference ± combined error", "|z|", "p", "verdict"]


def _headline(comparison: dict) -> str:
    """One comparison in a line: which observables differ, and which could not be judged."""
    rows = comparison["rows"]
    differs = [r["observable"] for r in rows if r["verdict"] == "differs"]
    apart = [r["observable"] for r in rows if "not_comparable" in r]
    return (f"differs in {', '.join(differs)}" if differs else "all consistent") + (
        f"; not comparable: {', '.join(apart)}" if apart else ""
    )


def _text(result: dict) -> str:
    lines = [f"verdict 'differs' when p < {result['alpha']:.2g} ({result['threshold_sigma']:g}σ two-sided)"]
    for c in result["comparisons"]:
        lines.append(f"{c['run']} vs {c['reference']}: {len(c['rows'])} observables, {_headline(c)}")
        for problem in c["conditions_differ"]:
            lines.append(f"  forced although {problem}")
        for row in c["rows"]:
            cells = _row_cells(row)
            lines.append(f"  {cells[0]:<30} {cells[3]:>26}  |z| {cells[4]:<16} p {cells[5]:<22} {cells[6]}")
    return "\n".join(lines)


def write_report(result: dict, output) -> Path:
    """report.md, compare.json and overlay PNGs in a folder (``output``, or the folder of ``output`` if it ends
    in .md)."""
    output = Path(output)
    folder, report = (output.parent, output) if output.suffix == ".md" else (output, output / "report.md")
    folder.mkdir(parents=True, exist_ok=True)
    names, runs, data = result["json"]["runs"], result["runs"], result["json"]
    figures = []
    for png, keys in FIGURES.items():
        panels = []
        for key in keys:
            if all(key in run for run in runs):
                x_name, y_name, xlabel, ylabel, reference, title = CURVES[key]
                curves = [
                    (name, _values(run[key], x_name), _values(run[key], y_name), _values(run[key], "err"))
                    for name, run in zip(names, runs)
                ]
                panels.append(
                    Panel(
                        title,
                        xlabel,
                        ylabel,
                        curves,
                        reference=reference,
                        ylim_beyond=1.5 if key.startswith("g_") else None,
                    )
                )
        if panels:
            figures.append(curve_figure(panels, folder / png))
    if all("orientation_F" in run for run in runs):
        maps = [
            (name, {k: _values(run["orientation_F"], k) for k in ("F", "cos_theta_edges", "phi_edges")})
            for name, run in zip(names, runs)
        ]
        figures.append(orientation_figure(maps, folder / "orientation_F.png", "lab-frame F(cos θ, φ) / kT"))
    lines = [
        f"# Comparison of {len(names)} runs: {', '.join(names)}",
        "",
        f"Reference: **{names[0]}**. Each observable of each run against it: difference, combined standard "
        f"error (block averages), z-score and p-value (Student's t at Welch–Satterthwaite degrees of freedom; "
        f"curves and maps: the point of largest |z|, its p times the number of points (Bonferroni); χ²/points "
        f"near 1 means agreement everywhere). Verdict **differs** when p < "
        f"{data['alpha']:.2g} ({data['threshold_sigma']:g}σ two-sided), else **consistent**.",
        "",
    ]
    for c in data["comparisons"]:
        lines += [f"## {c['run']} vs {c['reference']}: {_headline(c)}", ""]
        for problem in c["conditions_differ"]:
            lines.append(f"- **Compared with --force although {problem}.**")
        lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(_row_cells(row)) + " |" for row in c["rows"]]
        lines.append("")
    lines += (
        ["## Figures", ""]
        + [f"![{p.stem}]({p.name})" for p in figures]
        + ["", "Runs: " + ", ".join(f"{n} = `{d}`" for n, d in zip(names, data["directories"])), ""]
    )
    report.write_text("\n".join(lines))
    (folder / "compare.json").write_text(json.dumps(data, indent=1))
    return report
