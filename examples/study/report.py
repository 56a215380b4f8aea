"""docs/study.md from the study's outputs (study.json and the folders it names): tables of every observable with its
error, the `petmd compare` verdicts, the published finding beside them, and PNG figures copied next to the report
(docs/study/)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional

from analysis import plus_minus

from petmd.helpers.report import plot_angular_momentum

# what Langer, Pozdnyakov & Ceriotti (2024, arXiv:2406.17747) report, per part of the comparison
PUBLISHED = {
    "liquid": "bulk liquid water: no effect of the symmetry breaking beyond statistical noise on structure (g(r), "
    "dipole correlations), dynamics or the lab-frame orientation distribution ('negligible consequences in the "
    "interpolative, bulk regime')",
    "gas": "isolated molecule: the total angular momentum is not conserved by the unsymmetrized model (noticeable "
    "artifacts), yet the dynamics stay stable; symmetrization removes the spin-up",
    "ice": "ice Ih: the symmetry error is small against the energy differences between proton orders",
}
# the same finding per observable of the liquid comparison (against plain); the rest was not reported
PUBLISHED_LIQUID_ROWS = {
    **dict.fromkeys(("g_OO", "g_OH", "g_HH"), "structure unchanged"),
    **dict.fromkeys(("c_L", "c_T"), "dipole correlations unchanged"),
    **dict.fromkeys(("orientation_F", "orientation_moments"), "lab-frame orientations unchanged"),
    **dict.fromkeys(("msd_O", "diffusion_O", "c_uu"), "dynamics unchanged"),
}
REGENERATE = "python examples/study/run.py --analyse --report docs/study.md"
# the words of the report: what agrees, what does not and why, written by hand from the generated figures
DISCUSSION = Path(__file__).resolve().parent / "discussion.md"


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    def line(cells: List[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"  # |z|, |L| inside a cell

    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


def _copy(source: Path, figures: Path, name: str) -> Optional[str]:
    if not source.exists():
        return None
    figures.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, figures / name)
    return f"{figures.name}/{name}"


def liquid_section(liquid: dict, out: Path, figures: Path) -> List[str]:
    kinds = liquid["kinds"]
    lines = [
        "## Liquid water: 64 molecules, 300 K",
        "",
        f"{liquid['replicas']} independent replicas per run kind, each from its own SCAN frame and velocities through "
        "a plain equilibration; every kind's replica k starts from the same equilibrated state. Values are means over "
        "the finished replicas; errors the larger of their spread (standard error of the mean) and their block "
        "errors combined; `petmd compare` weighs them with as many degrees of freedom as there are replicas.",
        "",
    ]
    rows = []
    for name, k in kinds.items():
        g = k["g_OO_peak"]
        rows.append(
            [
                name,
                f"{k['time_ps']:.2f} ({k['replicas']} × {k['time_ps'] / k['replicas']:.2f}; {k['analysed_ps']:.2f})",
                plus_minus(k["temperature"]),
                plus_minus(k["potential_energy"], 1.0, ".6f"),
                plus_minus(k["pressure"], 1e-3),
                f"{g['g']:.3f} at {g['r']:.2f} Å, n {g['n']:.2f}",
                plus_minus(k["diffusion_O"]),
                plus_minus(k["conserved_drift"]),
                plus_minus(k["symmetry_error_meV_per_A"]),
                _broken(k["molecules"]),
                f"{k['closest_HH_A']:.2f}",
                f"{k['throughput']['ps_per_cpu_hour']:.2f}",
            ]
        )
    header = ["run", "ps (replicas × ps; analysed)", "T (K)", "PE (eV/atom)", "p (kbar)", "g_OO peak", "D_O (Å²/ps)"]
    header += ["drift (meV/atom/ps)", "network's sym. err. (meV/Å)", "broken molecules", "closest H–H (Å)"]
    header += ["ps per core-hour"]
    lines += _table(header, rows)
    lines += ["", f"Published: {PUBLISHED['liquid']}.", ""]
    for png in ("rdf.png", "dipole.png", "dynamics.png", "orientation_F.png"):
        link = _copy(out / "liquid" / "compare" / "all" / png, figures, f"liquid-{png}")
        if link:
            lines.append(f"![{png}]({link})")
    lines.append("")
    for c in liquid["comparisons"]:
        lines += [f"### {c['run']} against {c['reference']} (`petmd compare`)", ""]
        rows = [[r["observable"], _difference(r), f"{r['p']:.2g}", r["verdict"]] for r in c["rows"]]
        header = ["observable", "difference", "p", "verdict"]
        if c["reference"] == "plain":  # the published comparison: symmetrized against plain
            header.append("published")
            for row in rows:
                row.append(PUBLISHED_LIQUID_ROWS.get(row[0], "—"))
        lines += _table(header, rows) + [""]
    return lines


def _broken(molecules: dict) -> str:
    """Molecules without exactly two H, summed over the analysed frames, and when the first appeared."""
    count, first = molecules["not_whole_molecule_frames"], molecules["first_not_whole_ps"]
    return "none" if count == 0 else f"{count}" + (f" (first at {first:.2f} ps)" if first is not None else "")


def _difference(row: dict) -> str:
    """A comparison row's difference: run − reference ± combined error for scalars; for curves and maps the rms
    difference and the largest |z| over the points."""
    if row["kind"] == "scalar":
        return f"{row['difference']:.3g} ± {row['combined_err']:.2g} (|z| {abs(row['z']):.2f})"
    at = f" at {row['at']:.3g}" if row.get("at") is not None else ""
    return f"rms {row['rms_difference']:.3g}; max |z| {row['max_abs_z']:.2f}{at} over {row['points']} points"


def gas_section(gas: dict, figures: Path) -> List[str]:
    lines = ["## The isolated molecule: NVE from rest", ""]
    kinds = gas["kinds"]
    rows = [
        [
            name,
            f"{k['time_ps']:.2f}",
            f"{k['L_final']:.3g}",
            plus_minus(k["L_norm_drift"], digits=".3g"),
            plus_minus(k["mean_abs_torque"], digits=".3g"),
            f"{k['energy_drift_meV']:.3g}",
            f"{k['throughput']['cpu_s_per_step'] * 1e3:.2f}",
        ]
        for name, k in gas["kinds"].items()
    ]
    header = ["run", "ps", "|L| end (amu Å²/ps)", "d|L|/dt (amu Å²/ps²)", "mean |torque| (eV)", "ΔE_tot (meV)"]
    lines += _table(header + ["CPU ms per step"], rows)
    lines += ["", f"Published: {PUBLISHED['gas']}.", ""]
    series = [(name, k["series"]["time_ps"], k["series"]["L"], k["series"]["torque"]) for name, k in kinds.items()]
    plot_angular_momentum(series, figures / "gas-angular-momentum.png")
    lines += [f"![angular momentum]({figures.name}/gas-angular-momentum.png)", ""]
    lines += [
        "`petmd compare` against grid 2i, angular momentum only: each mode is one deterministic trajectory, whose "
        "temperature, MSD and c_uu depend on where it went, not on a statistical difference the block errors "
        "could measure.",
        "",
    ]
    rows = [
        [f"{c['run']} − {c['reference']}", r["observable"].split(".")[1], _difference(r), f"{r['p']:.2g}", r["verdict"]]
        for c in gas["comparisons"]
        for r in c["rows"]
    ]
    return lines + _table(["runs", "observable", "difference", "p", "verdict"], rows) + [""]


def ice_section(ice: dict, out: Path, figures: Path) -> List[str]:
    lines = ["## Ice Ih: proton disorder against the symmetry error", ""]
    rows = [
        [
            str(s["molecules"]),
            str(s["cells"]),
            f"{s['spread_plain_meV_per_mol']:.3f}",
            f"{s['std_plain_meV_per_mol']:.3f}",
            f"{s['spread_grid2i_meV_per_mol']:.3f}",
            f"{s['mean_sym_err_meV_per_mol']:.3f}",
            str(s["same_energy_order"]),
        ]
        for s in ice["sizes"]
    ]
    header = ["molecules", "proton orders", "spread plain", "std plain", "spread grid 2i", "sym. err.", "same order"]
    lines += _table(header, rows) + ["", "(meV per molecule)", ""]
    npt = ice.get("npt")
    if npt:
        # the ice example's summary gives {"mean", "err"}
        thermo = {key: {"value": e["mean"], "err": e["err"]} for key, e in npt["thermo"].items()}
        cells = ", ".join(f"{key} {plus_minus(thermo[key])} Å" for key in ("Lx", "Ly", "Lz") if key in thermo)
        lines.append(f"NPT 250 K, 1 bar, {npt['cell']}: density {plus_minus(thermo.get('density'))} g/cm³; {cells}.")
    lines += ["", f"Published: {PUBLISHED['ice']}.", ""]
    link = _copy(Path(ice["figure"]), figures, "ice.png")
    if link:
        lines += [f"![ice]({link})", ""]
    return lines


def _when(first: Optional[str], last: Optional[str]) -> str:
    """'2026-12-05 17:02 – 18:10' from two 'YYYY-MM-DD HH:MM:SS' times (the date once where both share it)."""
    if not first or not last:
        return "—"
    start, end = first[:16], last[:16]
    return f"{start} – {end[11:] if end[:10] == start[:10] else end}"


def runs_section(results: dict) -> List[str]:
    """Every analysed run: how far it got, when its segments finished, on which CPU, and its wall time (the sum of
    its segments', pauses between them left out)."""
    runs = results.get("liquid", {}).get("runs", []) + results.get("gas", {}).get("runs", [])
    ice = results.get("ice", {})
    if ice.get("ran"):
        npt = ice["npt"]
        what = f"{len(ice['cells'])} relaxations, NPT {npt['cell']}"
        runs.append({"stage": "ice", "run": what, "segments": "—", "time_ps": npt["steps"] * 0.0005, **ice["ran"]})
    rows = [
        [
            r["stage"],
            r["run"],
            str(r["segments"]),
            f"{r['time_ps']:.2f}",
            _when(r.get("first_finished"), r.get("last_finished")),
            f"{r['wall_s'] / 3600:.2f}" if "wall_s" in r else "—",
            ", ".join(r.get("cpus", [])) or "—",
        ]
        for r in runs
    ]
    header = ["stage", "run", "segments", "ps", "segments finished", "wall h", "CPU"]
    return ["## Runs", ""] + _table(header, rows) + [""] if rows else []


def write(results: dict, report: Path, out: Path) -> Path:
    figures = report.with_suffix("")  # docs/study.md → docs/study/
    lines = [
        "# The study's comparison: plain against symmetrized PET",
        "",
        f"Generated by `{REGENERATE}` from the outputs of `examples/study/run.py` on {results['date']}; model "
        f"`{Path(results['model']).name}`. Errors are block-average standard errors (5 blocks), the liquid's from its "
        "replicas (below); runs whose outputs are gone are read from their records (`examples/study/records/`). When, "
        "on which CPU and for how long each run ran: the table of runs at the end.",
        "",
        f"`examples/study/run.py` was started {len(results['invocations'])} times for these outputs (each start "
        "after the first resumed the unfinished runs from their last segment; `invocations.log`); wall times "
        "and throughput below are from the segments' records (`segments.json`).",
        "",
    ]
    liquid = results.get("liquid", {})
    unfinished = [
        f"liquid {name} {k['replicas']}/{liquid['replicas']} replicas"
        for name, k in liquid.get("kinds", {}).items()
        if k["replicas"] < liquid["replicas"]
    ]
    unfinished += [
        f"gas {name} {k['segments']}/{k['of']} segments"
        for name, k in results.get("gas", {}).get("kinds", {}).items()
        if k["segments"] < k["of"]
    ]
    if unfinished:
        lines += [
            f"**In progress: {', '.join(unfinished)}. Every figure below is of the runs as far as they have got; "
            "the verdicts will change as they grow.**",
            "",
        ]
    if "liquid" in results:
        lines += liquid_section(results["liquid"], out, figures)
    if "gas" in results:
        lines += gas_section(results["gas"], figures)
    if "ice" in results:
        lines += ice_section(results["ice"], out, figures)
    if DISCUSSION.exists():
        lines += [DISCUSSION.read_text().rstrip(), ""]
    lines += runs_section(results)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    return report
