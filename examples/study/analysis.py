"""Analysis of the study's runs: `petmd observables` on each run's segments, the on-the-fly symmetry error and the
throughput from the logs, `petmd compare` verdicts between the ways of running the potential, and the ice stage
(examples/ice-ih/run.py, resumed per stage)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import runs as study_runs

from petmd.cpu import cpu_model
from petmd.errors import PetmdError
from petmd.helpers.segments import SegmentedRun
from petmd.observables.analyze import Options, analyze
from petmd.observables.blocks import mean_estimate
from petmd.observables.compare import compare_runs, write_report
from petmd.observables.lammps_log import read_lammps_log
from petmd.observables.output import write_json, write_outputs
from petmd.observables.replicas import merge_entries, merge_replicas
from petmd.observables.structure import first_shell

# pairs (reference, run) of `petmd compare`: the question of the study, then whether MTS does the job of full
# symmetrization (ECSE: exact, every step)
LIQUID_COMPARISONS = [("plain", "ecse"), ("plain", "grid-2i-mts8"), ("ecse", "grid-2i-mts8")]
GAS_REFERENCE = "grid-2i"
ICE_SCRIPT = study_runs.EXAMPLES / "ice-ih" / "run.py"
# 4 ps: the anisotropic barostat settles the cell lengths within ~1 ps (0.5 fs steps), the 20 % the ice example
# leaves out; the rest gives the density to ~0.1 %. Two of the ice example's resumable 2 ps segments.
ICE_NPT_STEPS = 8000
# D of the liquid from MSD lags of 0.5-1.25 ps of each replica's 2.5 analysed ps (lags up to half the run have many
# time origins): past the ballistic and librational regime, though in this model's sluggish liquid (docs/study.md)
# not yet fully diffusive, so an apparent D, compared between the kinds over one window
LIQUID_FIT_PS = (0.5, 1.25)
MOLECULE_KEYS = ("not_whole_molecule_frames", "first_not_whole_ps", "proton_hops")


def estimate(values: np.ndarray, scale: float = 1.0) -> dict:
    mean, err, blocks = mean_estimate(np.asarray(values, float) * scale, 5)
    return {"value": float(mean), "err": float(err), "n_blocks": int(blocks)}


def throughput(run: SegmentedRun) -> dict:
    """CPU and wall seconds of each segment's MD loop and the 0.5 fs steps it made, from LAMMPS's own figures: its
    wall time and its CPU use (the process's CPU time over the wall time). The study's jobs run one thread each, so
    CPU seconds are the time a step costs on one core, whatever else shared or paused the machine; wall seconds
    include all of that."""
    wall = cpu = 0.0
    steps = 0
    for log in run.logs:
        loop = read_lammps_log(log).loops[-1]  # the MD run (the molecule's first segment minimizes first)
        wall += loop["wall_s"]
        cpu += loop["wall_s"] * (loop["cpu_fraction"] or 1.0) * loop["procs"]
        steps += loop["steps"] * int(run.variables.get("mts", 1))
    return {"wall_s": wall, "cpu_s": cpu, "steps": steps, "segments_wall_s": run.wall_s}


def rates(totals: dict, n_atoms: int) -> dict:
    """Cost per 0.5 fs step of a throughput() (or of several summed)."""
    steps, cpu = totals["steps"], totals["cpu_s"]
    return {
        "wall_s_per_step": totals["wall_s"] / steps,
        "cpu_s_per_step": cpu / steps,
        "ps_per_cpu_hour": 3600 * steps * 0.0005 / cpu,
        "atom_steps_per_cpu_s": n_atoms * steps / cpu,
        "segments_wall_s": totals["segments_wall_s"],
    }


def observables_of(run: SegmentedRun, discard_ps: float, fit_ps: Optional[tuple] = None) -> dict:
    """`petmd observables` of the recorded segments, written into RUN/observables; D from the MSD over ``fit_ps``
    where the analysed run is at least twice the window's end, else over petmd's default window."""
    time_ps = run.done * int(run.variables["steps"]) * 0.0005
    discard = discard_ps if time_ps > 3 * discard_ps else 0.0
    window = fit_ps if fit_ps is not None and time_ps - discard >= 2 * fit_ps[1] else None
    paths = [str(p) for p in run.dumps + run.logs]
    result = analyze(paths, Options(discard=discard, fit_window=window, progress=False))
    write_outputs(result, run.folder / "observables")
    result["discarded_ps"] = discard
    return result


def scalar(result: dict, key: str) -> Optional[dict]:
    entry = result.get(key)
    return {k: entry[k] for k in ("value", "err", "unit") if k in entry} if entry else None


def liquid_kind(run: SegmentedRun, kind: study_runs.Kind, lengths: study_runs.Lengths) -> dict:
    """One replica's run of one kind: its observables (``result``, as `petmd observables` writes them) and what the
    logs add (symmetry error, cost, the wall's contacts)."""
    result = observables_of(run, lengths.discard_ps, LIQUID_FIT_PS)
    thermo = run.thermo()
    return {
        "mode": kind.mode,
        "mts": kind.mts,
        "segments": run.done,
        "time_ps": float(thermo["Time"][-1]),
        "discarded_ps": result["discarded_ps"],
        "throughput": throughput(run),
        "symmetry_error_meV_per_atom": estimate(thermo["c_sym[1]"], 1e3),
        "symmetry_error_meV_per_A": estimate(thermo["c_sym[2]"], 1e3),
        "result": result,
    }


def merged_kind(entries: List[dict], folder: Path) -> dict:
    """The replicas of one kind as one run: observables merged (petmd.observables.replicas, written to ``folder``
    for `petmd compare`), times and costs summed."""
    result = merge_replicas([entry["result"] for entry in entries])
    write_outputs(result, folder)
    peak, minimum, coordination = first_shell(result["g_OO"], after=2.0)
    k = int(np.argmin(np.abs(np.asarray(result["g_OO"]["r"]) - peak)))
    totals = {key: sum(entry["throughput"][key] for entry in entries) for key in entries[0]["throughput"]}
    return {
        "mode": entries[0]["mode"],
        "mts": entries[0]["mts"],
        "replicas": len(entries),
        "segments": sum(entry["segments"] for entry in entries),
        "time_ps": sum(entry["time_ps"] for entry in entries),
        "analysed_ps": sum(entry["time_ps"] - entry["discarded_ps"] for entry in entries),
        "throughput": rates(totals, result["system"]["n_atoms"]),
        "temperature": scalar(result, "temperature"),
        "potential_energy": scalar(result, "potential_energy"),
        "pressure": scalar(result, "pressure"),
        "diffusion_O": scalar(result, "diffusion_O"),
        "conserved_drift": scalar(result, "conserved_drift"),
        "g_OO_peak": {"r": peak, "g": float(result["g_OO"]["g"][k]), "minimum": minimum, "n": coordination},
        "symmetry_error_meV_per_atom": merge_entries([e["symmetry_error_meV_per_atom"] for e in entries]),
        "symmetry_error_meV_per_A": merge_entries([e["symmetry_error_meV_per_A"] for e in entries]),
        # chemistry kept: a molecule without exactly two H means the run left water (docs/study.md)
        "molecules": {key: result["molecules"][key] for key in MOLECULE_KEYS},
        "closest_HH_A": result["g_HH"]["closest"],  # below the H–H wall's 1.3 Å: the wall acted
        "observables": str(folder),
    }


def recorded(
    run: SegmentedRun, record: Optional[Path], analyse: Callable[[], dict], unfinished: bool
) -> Optional[dict]:
    """A run's analysis: from its files once it has finished (and then kept in ``record``), else from ``record`` (a
    run whose files are gone: another machine or checkout), else, with ``unfinished``, of the segments it has so
    far; None when there is nothing."""
    settings = record_settings(run)
    if run.complete:
        entry = dict(analyse(), ran=ran(run, record))
        if record is not None:
            record.parent.mkdir(parents=True, exist_ok=True)
            write_json({"settings": settings, "entry": entry}, record)
        return entry
    if record is not None and record.exists():
        return read_record(record, settings)["entry"]
    return dict(analyse(), ran=ran(run, None)) if unfinished and run.done else None


def ran(run: SegmentedRun, record: Optional[Path]) -> dict:
    """When, where and how long a run ran, from its segments' records. Segments recorded without their CPU take the
    CPUs that the run's earlier record of the same segments names, else this machine's: a record is written in the
    session that ran the run."""
    provenance = run.provenance()
    if not provenance["cpus"]:
        earlier = json.loads(record.read_text())["entry"].get("ran", {}) if record and record.exists() else {}
        same = earlier.get("last_finished") == provenance["last_finished"] and earlier.get("cpus")
        provenance["cpus"] = earlier["cpus"] if same else [cpu_model()]
    return provenance


def read_record(record: Path, settings: dict) -> dict:
    """A record written with ``settings``; one of other settings is refused, naming them."""
    stored = json.loads(record.read_text())
    kept = stored["settings"]
    if kept != settings:
        changed = sorted(key for key in set(settings) | set(kept) if settings.get(key) != kept.get(key))
        raise PetmdError(
            f"{record} is the record of a run with other settings ({', '.join(changed)}): give --records another "
            "folder for these settings"
        )
    return stored


def model_hash(model: Path) -> str:
    return hashlib.sha256(Path(model).read_bytes()).hexdigest()


def record_settings(run: SegmentedRun) -> dict:
    """What a record must share with the run it stands for: every setting but where files are, and the model file's
    contents."""
    paths = ("model", "data", "pairfile")
    settings = {key: str(value) for key, value in run.variables.items() if key not in paths}
    settings["segments"] = str(run.segments)
    settings["input"] = Path(run.input_file).name
    settings["model_sha256"] = model_hash(Path(str(run.variables["model"])))
    return settings


def compare(out: Path, folders: Dict[str, str], pairs) -> List[dict]:
    """`petmd compare` of each (reference, run) pair whose observables exist, with report.md in
    OUT/compare/RUN-vs-REFERENCE; and one overlay of all runs (figures only) in OUT/compare/all."""
    verdicts = []
    for reference, name in pairs:
        if reference not in folders or name not in folders:
            continue
        result = compare_runs([folders[reference], folders[name]], names=[reference, name], force=True)
        write_report(result, out / "compare" / f"{name}-vs-{reference}")
        rows = result["json"]["comparisons"][0]["rows"]
        verdicts.append({"reference": reference, "run": name, "rows": rows})
    if len(folders) > 2:
        names = list(folders)
        write_report(compare_runs([folders[n] for n in names], names=names, force=True), out / "compare" / "all")
    return verdicts


def analyse_liquid(out: Path, model: Path, lengths: study_runs.Lengths, records: Optional[Path]) -> dict:
    """Every replica's finished runs (from their files, or from ``records``), merged per kind, and compared."""
    per_kind: Dict[str, List[dict]] = {kind.name: [] for kind in study_runs.LIQUID_KINDS}
    equilibration = {"segments": 0, "wall_s": 0.0}
    ran_runs = []
    for replica in range(lengths.liquid_replicas):
        runs = study_runs.liquid_runs(out, model, lengths, replica)
        equilibration["segments"] += runs["equilibration"].done
        equilibration["wall_s"] += runs["equilibration"].wall_s
        for kind in study_runs.LIQUID_KINDS:
            record = study_runs.record_path(records, "liquid", kind.name, replica)
            run = runs[kind.name]
            entry = recorded(run, record, partial(liquid_kind, run, kind, lengths), unfinished=False)
            if entry is not None:
                per_kind[kind.name].append(entry)
                ran_runs.append(run_row(f"liquid replica {replica}", kind.name, entry))
    merged = out / "liquid" / "merged"
    kinds = {name: merged_kind(entries, merged / name) for name, entries in per_kind.items() if entries}
    folders = {name: entry["observables"] for name, entry in kinds.items()}
    return {
        "replicas": lengths.liquid_replicas,
        "equilibration": equilibration,
        "kinds": kinds,
        "comparisons": compare(out / "liquid", folders, LIQUID_COMPARISONS),
        "runs": ran_runs,
    }


def run_row(stage: str, name: str, entry: dict) -> dict:
    """One line of the report's table of runs: what ran, how far, when and where."""
    return {
        "stage": stage,
        "run": name,
        "segments": entry["segments"],
        "time_ps": entry["time_ps"],
        **entry.get("ran", {}),
    }


def gas_kind(run: SegmentedRun, kind: study_runs.Kind) -> dict:
    result = observables_of(run, 0.0)
    thermo = run.thermo()
    angular = result["angular_momentum"]
    return {
        "mode": kind.mode,
        "mts": kind.mts,
        "segments": run.done,
        "of": run.segments,
        "time_ps": float(thermo["Time"][-1]),
        "throughput": rates(throughput(run), 3),
        "L_final": float(thermo["v_L"][-1]),
        "L_max": float(thermo["v_L"].max()),
        "L_norm_drift": angular["L_norm_drift"],
        "mean_abs_torque": angular.get("mean_abs_torque"),
        "torque_max_eV": float(thermo["v_tau"].max()),
        "energy_drift_meV": float(1e3 * (thermo["TotEng"][-1] - thermo["TotEng"][0])),
        "symmetry_error_meV_per_A": estimate(thermo["c_sym[2]"], 1e3),
        "series": {"time_ps": thermo["Time"].tolist(), "L": thermo["v_L"].tolist(), "torque": thermo["v_tau"].tolist()},
        "observables": str(run.folder / "observables"),
        "result": result,
    }


def analyse_gas(out: Path, model: Path, lengths: study_runs.Lengths, records: Optional[Path]) -> dict:
    runs = study_runs.gas_runs(out, model, lengths)
    kinds = {}
    for kind in study_runs.GAS_KINDS:
        run = runs[kind.name]
        record = study_runs.record_path(records, "gas", kind.name)
        entry = recorded(run, record, partial(gas_kind, run, kind), unfinished=True)
        if entry is not None:
            # compare reads folders: written again from the entry, which may come from a record
            write_outputs(entry.pop("result"), run.folder / "observables")
            kinds[kind.name] = dict(entry, observables=str(run.folder / "observables"))
    folders = {name: entry["observables"] for name, entry in kinds.items()}
    pairs = [(GAS_REFERENCE, name) for name in kinds if name != GAS_REFERENCE]
    comparisons = compare(out / "gas", folders, pairs)
    for c in comparisons:  # one deterministic trajectory per mode: only the angular momentum is a fair test
        c["rows"] = [row for row in c["rows"] if row["observable"].startswith("angular_momentum")]
    runs = [run_row("gas", name, entry) for name, entry in kinds.items()]
    return {"kinds": kinds, "comparisons": comparisons, "runs": runs}


def ice_results(out: Path, model: Path, short: bool, records: Optional[Path]) -> Optional[dict]:
    """The ice stage's summary (with "figure", its PNG): from OUT/ice once it has finished (then kept in
    RECORDS/ice), else from the records."""
    folder = out / "ice"
    settings = {"model_sha256": model_hash(model), "short": str(short), "npt_steps": str(ICE_NPT_STEPS)}
    record = study_runs.record_path(records, "ice", "summary")
    if (folder / "summary.json").exists():
        summary = json.loads((folder / "summary.json").read_text())
        if record is not None:
            record.parent.mkdir(parents=True, exist_ok=True)
            write_json({"settings": settings, "entry": summary}, record)
            shutil.copy(folder / "ice.png", record.with_suffix(".png"))
        return dict(summary, figure=str(folder / "ice.png"))
    if record is not None and record.exists():
        return dict(read_record(record, settings)["entry"], figure=str(record.with_suffix(".png")))
    return None


def run_ice(out: Path, model: Path, short: bool, deadline: Optional[float]) -> bool:
    """The ice stage: examples/ice-ih/run.py (--long relaxations and a 4 ps NPT unless short) into OUT/ice. That
    script resumes by itself (relaxed cells are kept, NPT runs in segments), so running it again after a kill
    continues it."""
    if deadline is not None and time.monotonic() > deadline:
        return (out / "ice" / "summary.json").exists()
    command = [sys.executable, str(ICE_SCRIPT), "--model", str(model.resolve()), "-o", str(out / "ice")]
    full = ["--long", "--npt-steps", str(ICE_NPT_STEPS)]
    if subprocess.run(command + ([] if short else full)).returncode != 0:
        raise PetmdError(f"the ice stage ({ICE_SCRIPT}) failed: its output above says why")
    return True


def analyse(out: Path, model: Path, lengths: study_runs.Lengths, stages, records: Optional[Path]) -> dict:
    results: dict = {
        "model": str(model),
        "lengths": asdict(lengths),
        "date": time.strftime("%Y-%m-%d"),
    }
    invocations = out / "invocations.log"
    results["invocations"] = invocations.read_text().splitlines() if invocations.exists() else []
    if "liquid" in stages:
        results["liquid"] = analyse_liquid(out, model, lengths, records)
    if "gas" in stages:
        results["gas"] = analyse_gas(out, model, lengths, records)
    ice = ice_results(out, model, lengths == study_runs.SHORT, records) if "ice" in stages else None
    if ice is not None:
        results["ice"] = ice
    return results


def plus_minus(entry: Optional[dict], scale: float = 1.0, digits: str = ".4g") -> str:
    """'value ± err' of a {"value", "err"} entry (times ``scale``), '—' where there is none."""
    if not entry or entry.get("value") is None:
        return "—"
    return f"{scale * entry['value']:{digits}} ± {scale * entry['err']:.2g}"


def summary_text(results: dict) -> str:
    lines = []
    liquid = results.get("liquid")
    if liquid:
        lines.append("liquid water, 64 molecules, 300 K (± block-average standard errors)")
        for name, k in liquid["kinds"].items():
            lines.append(
                f"  {name:<14} {k['time_ps']:6.2f} ps ({k['replicas']}/{liquid['replicas']} replicas)"
                f"  T {plus_minus(k['temperature'])} K  D_O {plus_minus(k['diffusion_O'])} Å²/ps"
                f"  drift {plus_minus(k['conserved_drift'])} meV/atom/ps"
                f"  sym. err. {plus_minus(k['symmetry_error_meV_per_A'])} meV/Å"
            )
        for c in liquid["comparisons"]:
            differs = [r["observable"] for r in c["rows"] if r["verdict"] == "differs"]
            verdict = f"differs in {', '.join(differs)}" if differs else "consistent"
            lines.append(f"  {c['run']} vs {c['reference']}: {verdict}")
    gas = results.get("gas")
    if gas:
        lines.append("isolated molecule, NVE from rest")
        for name, k in gas["kinds"].items():
            lines.append(
                f"  {name:<14} {k['time_ps']:6.2f} ps  |L| end {k['L_final']:.3g} amu Å²/ps  "
                f"mean |torque| {plus_minus(k['mean_abs_torque'], digits='.3g')} eV  "
                f"ΔE {k['energy_drift_meV']:.3g} meV"
            )
    ice = results.get("ice")
    if ice:
        lines.append("ice Ih proton disorder (meV/molecule)")
        for s in ice["sizes"]:
            lines.append(
                f"  {s['molecules']:4d} mol × {s['cells']} orders: spread {s['spread_plain_meV_per_mol']:.3f} plain, "
                f"{s['spread_grid2i_meV_per_mol']:.3f} grid 2i; symmetry error {s['mean_sym_err_meV_per_mol']:.3f}"
            )
    return "\n".join(lines)
