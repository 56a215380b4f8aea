"""Every example in examples/ runs in its short form with the shipped small model, end to end through the wheel's
`lmp` (and mpiexec), and its post-processing gives physically sensible figures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from petmd.cpu import cpu_model

ROOT = Path(__file__).resolve().parents[1]
SMALL_MODEL = ROOT / "models" / "pet-water-small.pt"
PAIR_FILE = ROOT / "examples" / "pair-pet.lammps"


def run_example(name: str, tmp_path: Path, *args) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name / "run.py"), "-o", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads((tmp_path / "summary.json").read_text())


@pytest.mark.slow
def test_liquid_water_example(tmp_path, scan_data_path):
    summary = run_example("liquid-water", tmp_path, "--npt")
    nvt, npt = summary["nvt"], summary["npt"]
    assert nvt["n_atoms"] == 192 and nvt["time_ps"] == pytest.approx(0.2)
    assert 200 < nvt["thermo"]["temperature"]["mean"] < 400
    # a liquid: an O–O first shell near 2.8 Å with about four neighbours
    assert 2.55 < nvt["g_OO"]["first_peak_A"] < 3.0 and 3.0 < nvt["g_OO"]["coordination"] < 6.0
    assert abs(nvt["conserved_energy_drift_meV_per_atom_ps"]) < 50.0
    sym = nvt["thermo"]["symmetry error mean |F-F_grid|"]["mean"]
    assert 0.0 < sym < 200.0  # meV/Å: PET is not exactly invariant, and the error is far below the forces
    assert 0.8 < npt["thermo"]["density"]["mean"] < 1.2
    assert summary["hh_wall_A"] == 1.3 and nvt["molecules"]["not_whole_molecule_frames"] == 0
    for name in (
        "rdf.png",
        "rdf.csv",
        "nvt-thermo.png",
        "npt-thermo.png",
        "nvt.dump",
        "observables.json",
        "dipole.png",
        "orientation_F.png",
        "dynamics.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    rdf = np.loadtxt(tmp_path / "rdf.csv", delimiter=",", skiprows=1)
    assert rdf.shape[1] == 13 and np.all(rdf[:, 0] > 0)  # r, then g, err, n, n_err for OO, OH, HH


@pytest.mark.slow
def test_liquid_water_example_with_multiple_time_stepping(tmp_path, scan_data_path):
    """--mts 4: NVT (CSVR) and NPT (nph + CSVR) under r-RESPA with the grid-2 correction every 4th 0.5 fs step."""
    summary = run_example("liquid-water", tmp_path, "--npt", "--steps", "80", "--mode", "grid 2", "--mts", "4")
    nvt, npt = summary["nvt"], summary["npt"]
    assert summary["mts"] == 4 and nvt["time_ps"] == pytest.approx(0.04) and npt["time_ps"] == pytest.approx(0.04)
    log = (tmp_path / "nvt.log").read_text()
    assert "run_style respa 2 4 hybrid 1 2" in log and "correction: 18 rotations" in log
    assert 200 < nvt["thermo"]["temperature"]["mean"] < 400 and 0.8 < npt["thermo"]["density"]["mean"] < 1.2


@pytest.mark.slow
def test_gas_phase_example_angular_momentum(tmp_path):
    summary = run_example("gas-phase", tmp_path, "--modes", "none", "grid 2i", "random", "ecse", "--mts", "4")
    by_mode = {r["mode"]: r for r in summary["results"]}
    assert set(by_mode) == {"none", "grid 2i", "random", "ecse", "grid 2i, MTS 4", "random, MTS 4", "ecse, MTS 4"}
    plain = by_mode["none"]["L_final"]
    assert plain > 1e-4  # the plain network spins the molecule up from rest
    # averaging over the grid or exact ECSE remove the net torque to the float32 network's round-off
    assert by_mode["grid 2i"]["L_max"] < 1e-2 * plain
    assert by_mode["ecse"]["L_max"] < 1e-2 * plain
    assert by_mode["ecse"]["torque_max_eV"] < 1e-2 * by_mode["none"]["torque_max_eV"]
    # the correction every 4th step removes most of the spin-up, not all of it (its fast part is left out)
    assert by_mode["grid 2i, MTS 4"]["L_max"] < 1e-2 * plain and by_mode["ecse, MTS 4"]["L_max"] < 1e-2 * plain
    assert (tmp_path / "angmom.png").stat().st_size > 0


def check_ice_summary(summary: dict) -> None:
    """The ice example's short form (run by the study's --short): three relaxed 32-molecule cells and NPT."""
    cells = summary["cells"]
    assert len(cells) == 3 and {c["molecules"] for c in cells} == {32}
    for c in cells:
        assert c["fmax_plain"] < 1.5e-3 and -470 < c["E_plain_eV_per_mol"] < -465  # relaxed; SCAN: ~ -467.4 eV/mol
        # grid 2i relaxes from the plain minimum: a different, nearby minimum
        assert abs(c["E_grid2i_eV_per_mol"] - c["E_plain_eV_per_mol"]) < 0.05
    size = summary["sizes"][0]
    assert size["cells"] == 3 and size["spread_plain_meV_per_mol"] > 0 and size["mean_sym_err_meV_per_mol"] > 0
    assert 150 < summary["npt"]["thermo"]["temperature"]["mean"] < 350
    assert 0.85 < summary["npt"]["thermo"]["density"]["mean"] < 1.0


@pytest.mark.slow
def test_study_short_form_runs_every_stage_and_resumes(tmp_path, scan_data_path):
    """examples/study/run.py --short: liquid (equilibration, plain, grid 2i by MTS, ECSE), gas phase (five modes),
    ice (the ice example's short form); observables, verdicts, the report; a second call finds everything done."""
    report = tmp_path / "docs" / "study.md"
    command = [sys.executable, str(ROOT / "examples" / "study" / "run.py"), "--short", "-o", str(tmp_path)]
    first = subprocess.run(command + ["--report", str(report)], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, f"study failed:\n{first.stdout[-3000:]}\n{first.stderr[-3000:]}"
    study = json.loads((tmp_path / "study.json").read_text())
    assert study["complete"] == {"liquid": True, "gas": True, "ice": True}
    liquid = study["liquid"]["kinds"]
    assert set(liquid) == {"plain", "grid-2i-mts8", "ecse"}
    for kind in liquid.values():
        assert kind["replicas"] == 2 and kind["segments"] == 2 and kind["time_ps"] == pytest.approx(0.032)
        assert 200 < kind["temperature"]["value"] < 400 and 2.55 < kind["g_OO_peak"]["r"] < 3.0
        assert 0 < kind["symmetry_error_meV_per_A"]["value"] < 200 and kind["throughput"]["ps_per_cpu_hour"] > 0
        assert kind["molecules"]["not_whole_molecule_frames"] == 0 and kind["molecules"]["first_not_whole_ps"] is None
        assert 1.0 < kind["closest_HH_A"] < 1.6  # intramolecular H–H ~1.5 Å
    pairs = {(c["reference"], c["run"]) for c in study["liquid"]["comparisons"]}
    assert pairs == {("plain", "ecse"), ("plain", "grid-2i-mts8"), ("ecse", "grid-2i-mts8")}
    observables = {r["observable"] for r in study["liquid"]["comparisons"][0]["rows"]}
    assert {"g_OO", "c_L", "c_T", "orientation_F", "msd_O", "c_uu", "conserved_drift"} <= observables
    gas = study["gas"]["kinds"]
    assert set(gas) == {"plain", "grid-2i", "random", "ecse", "grid-2i-mts4"}
    assert gas["plain"]["L_final"] > 1e-4 and gas["grid-2i"]["L_max"] < 1e-2 * gas["plain"]["L_final"]
    assert gas["ecse"]["L_max"] < 1e-2 * gas["plain"]["L_final"]
    check_ice_summary(study["ice"])
    runs = study["liquid"]["runs"] + study["gas"]["runs"]  # when and where each ran, for the report's table
    assert len(runs) == 2 * 3 + 5 and all(r["cpus"] == [cpu_model()] and r["wall_s"] > 0 for r in runs)
    assert study["ice"]["ran"]["cpus"] == [cpu_model()] and study["ice"]["ran"]["last_finished"]
    text = report.read_text()
    assert "## Runs" in text and "| ice | 3 relaxations, NPT" in text and "| liquid replica 1 | ecse | 1 |" in text
    for heading in ("## Liquid water", "## The isolated molecule", "## Ice Ih", "Published:"):
        assert heading in text
    assert "| published |" in text and "| structure unchanged |" in text  # per observable, against plain
    assert "density — " not in text and "NPT 250 K, 1 bar" in text  # the ice NPT's figures are in the report
    liquid = ("liquid-rdf.png", "liquid-dynamics.png", "liquid-orientation_F.png")
    for png in liquid + ("gas-angular-momentum.png", "ice.png"):
        assert (report.parent / "study" / png).stat().st_size > 0 and f"study/{png}" in text
    again = subprocess.run(command + ["--stages", "liquid", "gas"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "$ (cd" not in again.stdout  # no segment ran again
    assert json.loads((tmp_path / "study.json").read_text())["liquid"]["kinds"]["ecse"]["segments"] == 2
    # every output lost (another checkout): the analysis and the report come back from the records
    records = tmp_path / "records" / "liquid"
    assert sorted(p.name for p in (records / "replica-1").iterdir()) == ["ecse.json", "grid-2i-mts8.json", "plain.json"]
    for stage in ("liquid", "gas", "ice"):
        shutil.rmtree(tmp_path / stage)
    shutil.rmtree(report.parent)
    restored = subprocess.run(command + ["--analyse", "--report", str(report)], capture_output=True, text=True)
    assert restored.returncode == 0, restored.stderr[-3000:]
    kept = json.loads((tmp_path / "study.json").read_text())
    assert kept["liquid"]["kinds"]["ecse"]["temperature"] == study["liquid"]["kinds"]["ecse"]["temperature"]
    assert kept["liquid"]["kinds"]["plain"]["replicas"] == 2 and kept["ice"]["sizes"] == study["ice"]["sizes"]
    assert kept["liquid"]["runs"] == study["liquid"]["runs"] and kept["ice"]["ran"] == study["ice"]["ran"]
    assert kept["gas"]["kinds"]["plain"]["L_final"] == study["gas"]["kinds"]["plain"]["L_final"]
    assert [c["rows"] for c in kept["gas"]["comparisons"]] == [c["rows"] for c in study["gas"]["comparisons"]]
    for png in liquid + ("gas-angular-momentum.png", "ice.png"):
        assert (report.parent / "study" / png).stat().st_size > 0 and f"study/{png}" in report.read_text()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)  # recorded runs are done
    assert rerun.returncode == 0 and "$ (cd" not in rerun.stdout and not (tmp_path / "ice").exists(), rerun.stdout
    analyse = command + ["--stages", "liquid", "--analyse"]
    stored = json.loads((records / "replica-0" / "ecse.json").read_text())
    stored["settings"]["steps"] = "64"
    (records / "replica-0" / "ecse.json").write_text(json.dumps(stored))
    refused = subprocess.run(analyse, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "replica-0/ecse.json is the record of a run with other settings (steps)" in (
        refused.stderr
    )


def _wca(r: np.ndarray, cutoff: float) -> float:
    """The H–H wall of examples/pair-pet.lammps: Lennard-Jones (ε = 1 eV) cut and shifted at its minimum."""
    x = (cutoff / 2 ** (1 / 6) / r[r < cutoff]) ** 6
    return float(np.sum(4 * (x * x - x) + 1))


def _first_energy(log: Path) -> float:
    from petmd.observables.lammps_log import read_lammps_log

    return float(read_lammps_log(log).thermo["PotEng"][0])


def test_pair_file_wall_adds_its_energy_below_the_cutoff_only_and_runs_under_respa(tmp_path, scan_data_path):
    """examples/pair-pet.lammps with hhwall 1.3: the liquid's energy unchanged where every H–H is beyond 1.3 Å; one H
    moved to 1.1 Å from another adds the wall's energy of the pairs below 1.3 Å (to LAMMPS's output precision); the
    wall rides the fast respa level beside the two terms of multiple time stepping."""
    from petmd.helpers.lammps_run import run_lammps
    from petmd.helpers.structures import liquid_water, write_lammps_data

    intact = liquid_water()
    squeezed = intact.copy()
    h = [i for i, s in enumerate(squeezed.get_chemical_symbols()) if s == "H"]
    squeezed.positions[h[0]] = squeezed.positions[h[2]] + [1.1, 0.0, 0.0]
    energies = {}
    for name, atoms in (("intact", intact), ("squeezed", squeezed)):
        data = write_lammps_data(atoms, tmp_path / f"{name}.data")
        hh = np.concatenate([atoms.get_distances(i, h[k + 1 :], mic=True) for k, i in enumerate(h[:-1])])
        for wall in (0, 1.3):
            log = f"{name}-{wall}.log"
            variables = {"model": SMALL_MODEL, "data": data, "pairfile": PAIR_FILE, "steps": 0, "hhwall": wall}
            run_lammps(ROOT / "examples" / "liquid-water" / "nvt.lammps", tmp_path, variables, log=log, quiet=True)
            energies[name, wall] = _first_energy(tmp_path / log)
        expected = _wca(hh, 1.3)
        assert (expected > 1.0) == (name == "squeezed")
        assert energies[name, 1.3] - energies[name, 0] == pytest.approx(expected, abs=2e-3)
    variables = {"model": SMALL_MODEL, "data": tmp_path / "intact.data", "pairfile": PAIR_FILE, "hhwall": 1.3}
    variables.update(steps=16, mode="grid 2i", mts=8, symevery=8, thermoevery=8, dumpevery=8)
    run_lammps(ROOT / "examples" / "liquid-water" / "nvt.lammps", tmp_path, variables, log="mts.log", quiet=True)
    text = (tmp_path / "mts.log").read_text()
    assert "run_style respa 2 8 hybrid 1 2 1" in text and "lj/cut 1.3" in text


@pytest.mark.slow
def test_large_water_example_on_two_ranks(tmp_path, scan_data_path):
    summary = run_example("large-water", tmp_path, "--steps", "2")
    assert summary["atoms"] == 24000 and summary["ranks"] == 2 and summary["steps"] == 2
    assert summary["atom_steps_per_s"] > 0 and 200 < summary["temperature_final_K"] < 400


def test_example_scripts_refuse_a_missing_model(tmp_path):
    for name in ("liquid-water", "gas-phase", "ice-ih", "large-water", "study"):
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / name / "run.py"), "--model", str(tmp_path / "nope.pt")],
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0 and "nope.pt does not exist" in result.stderr


@pytest.mark.parametrize(
    "steps, message",
    [("8001", "--npt-steps 8001 must be a multiple of 2 (segments of ~4000 steps)"), ("-5", "at least 1, got -5")],
)
def test_ice_example_refuses_npt_steps_it_cannot_run_before_relaxing(tmp_path, steps, message):
    script = ROOT / "examples" / "ice-ih" / "run.py"
    result = subprocess.run(
        [sys.executable, str(script), "-o", str(tmp_path), "--npt-steps", steps], capture_output=True, text=True
    )
    assert result.returncode == 2 and message in result.stderr and not list(tmp_path.glob("ice-*"))


def test_study_refuses_runs_its_stages_do_not_have(tmp_path):
    script = ROOT / "examples" / "study" / "run.py"
    command = [sys.executable, str(script), "-o", str(tmp_path), "--stages", "liquid", "--runs", "ecse", "random"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and "--runs random: no such run in --stages liquid" in result.stderr
    assert not (tmp_path / "liquid").exists()


def test_pair_file_refuses_a_negative_wall(tmp_path, scan_data_path):
    from petmd.errors import PetmdError
    from petmd.helpers.lammps_run import run_lammps
    from petmd.helpers.structures import liquid_water, write_lammps_data

    data = write_lammps_data(liquid_water(), tmp_path / "water.data")
    variables = {"model": SMALL_MODEL, "data": data, "pairfile": PAIR_FILE, "steps": 0, "hhwall": -1}
    with pytest.raises(PetmdError, match=r"hhwall -1 is negative; give the cutoff in Angstrom \(1.3\) or 0 for none"):
        run_lammps(ROOT / "examples" / "liquid-water" / "nvt.lammps", tmp_path, variables, quiet=True)


def test_study_refuses_a_file_as_its_records_folder(tmp_path):
    script = ROOT / "examples" / "study" / "run.py"
    (tmp_path / "records").write_text("not a folder")
    command = [sys.executable, str(script), "-o", str(tmp_path), "--records", str(tmp_path / "records"), "--analyse"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and "records is a file: give a folder for the records" in result.stderr


def test_study_refuses_a_negative_time_budget(tmp_path):
    script = ROOT / "examples" / "study" / "run.py"
    result = subprocess.run(
        [sys.executable, str(script), "-o", str(tmp_path), "--hours", "-1"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "--hours must be ≥ 0 (got -1.0)" in result.stderr


@pytest.mark.slow
def test_demo_report(tmp_path, scan_data_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "demo" / "run_demo.py"),
            "--model",
            str(SMALL_MODEL),
            "--steps",
            "60",
            "--sym-every",
            "20",
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"report: {tmp_path / 'report.md'}" in result.stdout
    report = (tmp_path / "report.md").read_text()
    for needed in ("## Thermodynamics", "g_OO first peak", "## Symmetry error", "rdf.png", "symmetry-error.png"):
        assert needed in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["symmetry"]["time_ps"]) == 4  # steps 0, 20, 40, 60
    assert all(v > 0 for v in summary["symmetry"]["force_mean_meV_per_A"])


def test_liquid_water_example_refuses_a_negative_wall(tmp_path):
    script = ROOT / "examples" / "liquid-water" / "run.py"
    result = subprocess.run(
        [sys.executable, str(script), "-o", str(tmp_path), "--hh-wall", "-1"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "--hh-wall must be ≥ 0 (0: no wall), got -1.0" in result.stderr
    assert not (tmp_path / "water.data").exists()


def test_study_runs_only_the_runs_it_is_given(tmp_path):
    """--runs: one job per core; the others are left for another job (and the analysis takes what there is)."""
    script = ROOT / "examples" / "study" / "run.py"
    command = [sys.executable, str(script), "--short", "-o", str(tmp_path), "--stages", "gas", "--runs", "plain"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert [p.name for p in (tmp_path / "gas").iterdir()] == ["plain"]
    assert json.loads((tmp_path / "study.json").read_text())["gas"]["kinds"]["plain"]["segments"] == 2
    assert "runs plain" in (tmp_path / "invocations.log").read_text()
