"""petmd observables / compare: synthetic systems with known answers, real LAMMPS runs, malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

from petmd.cli import main
from petmd.errors import PetmdError
from petmd.observables.analyze import Options, analyze
from petmd.observables.compare import compare_runs, write_report
from petmd.observables.lammps_dump import read_lammps_dump
from petmd.observables.lammps_log import read_lammps_log
from petmd.observables.output import write_outputs

REPO = Path(__file__).resolve().parents[1]
ANGLE = np.deg2rad(104.5)
LOCAL = np.array([[0.0, 0.0, 0.0], [0.97, 0.0, 0.0], [0.97 * np.cos(ANGLE), 0.97 * np.sin(ANGLE), 0.0]])
# a molecule whose dipole direction u (O → H–H midpoint) is +z
U_MIDPOINT = LOCAL[1:].mean(axis=0)


def molecule(center, u_direction=None, rng=None) -> np.ndarray:
    """O, H, H of a water molecule at ``center`` with dipole direction ``u_direction`` (random if None)."""
    rng = rng or np.random.default_rng(0)
    if u_direction is None:
        from scipy.spatial.transform import Rotation

        return LOCAL @ Rotation.random(random_state=rng).as_matrix().T + center
    # rotate the local midpoint direction onto u_direction, then spin randomly about it
    a, b = U_MIDPOINT / np.linalg.norm(U_MIDPOINT), np.asarray(u_direction, float) / np.linalg.norm(u_direction)
    v, c = np.cross(a, b), float(a @ b)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    r = np.eye(3) + vx + vx @ vx / (1 + c) if c > -1 + 1e-9 else np.diag([1.0, -1.0, -1.0])
    spin = rng.uniform(0, 2 * np.pi)
    k = np.array([[0, -b[2], b[1]], [b[2], 0, -b[0]], [-b[1], b[0], 0]])
    s = np.eye(3) + np.sin(spin) * k + (1 - np.cos(spin)) * k @ k
    return LOCAL @ (s @ r).T + center


def water(centers, cell, directions=None, rng=None, pbc=True) -> Atoms:
    rng = rng or np.random.default_rng(1)
    positions = [molecule(c, None if directions is None else directions[k], rng) for k, c in enumerate(centers)]
    return Atoms("OH2" * len(centers), positions=np.concatenate(positions), cell=cell, pbc=pbc)


def write_extxyz(path: Path, frames, interval: float | None = None) -> Path:
    for k, atoms in enumerate(frames):
        if interval is not None:
            atoms.info["time"] = k * interval
    ase.io.write(path, frames, format="extxyz")
    return path


def write_dump(path: Path, frames, steps, types=("O", "H"), images=True) -> Path:
    """A LAMMPS `dump custom ... id type x y z ix iy iz` of orthogonal frames: wrapped x and image flags."""
    lines = []
    for step, atoms in zip(steps, frames):
        length = np.diag(atoms.cell.array)
        image = np.floor(atoms.positions / length).astype(int)
        wrapped = atoms.positions - image * length
        lines += ["ITEM: TIMESTEP", str(step), "ITEM: NUMBER OF ATOMS", str(len(atoms)), "ITEM: BOX BOUNDS pp pp pp"]
        lines += [f"0 {x:.10f}" for x in length]
        lines.append("ITEM: ATOMS id type x y z ix iy iz" if images else "ITEM: ATOMS id type x y z")
        for k, (s, r, n) in enumerate(zip(atoms.get_chemical_symbols(), wrapped, image)):
            lines.append(
                f"{k + 1} {types.index(s) + 1} {r[0]:.10f} {r[1]:.10f} {r[2]:.10f}"
                + (f" {n[0]} {n[1]} {n[2]}" if images else "")
            )
    path.write_text("\n".join(lines) + "\n")
    return path


def fcc_centers(n: int, a: float) -> np.ndarray:
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return np.array([(np.array(idx) + b) * a for idx in np.ndindex(n, n, n) for b in basis])


# --- structure -------------------------------------------------------------------------------------------------


def test_ideal_gas_rdfs_are_one_within_error(tmp_path):
    rng = np.random.default_rng(3)
    frames = [
        Atoms("O100H200", positions=rng.uniform(0, 14.0, (300, 3)), cell=np.eye(3) * 14.0, pbc=True) for _ in range(40)
    ]
    result = analyze(
        [str(write_extxyz(tmp_path / "gas.extxyz", frames))], Options(r_max=6.0, rdf_bins=12, progress=False)
    )
    for key in ("g_OO", "g_OH", "g_HH"):
        g, err = result[key]["g"][2:], result[key]["err"][2:]
        assert np.all(np.abs(g - 1.0) < 0.08), key
        assert np.all(np.abs(g - 1.0) / err < 5.0), key
        assert np.sqrt(np.mean(((g - 1.0) / err) ** 2)) < 2.0, key  # errors the right size, not inflated
    assert result["g_OH"]["coordination"][-1] == pytest.approx(200 / 14.0**3 * 4 / 3 * np.pi * 6.0**3, rel=0.05)


def test_fcc_crystal_of_aligned_molecules(tmp_path):
    """Peaks at the fcc shells with 12 and 6 neighbours (r_max beyond half the box: all periodic images count);
    identical dipoles give c_L = c_T = 1 in every shell."""
    a = 5.0
    centers = fcc_centers(2, a)
    crystal = water(centers, np.eye(3) * 2 * a, directions=[[0.3, -0.5, 0.8]] * len(centers))
    result = analyze(
        [str(write_extxyz(tmp_path / "fcc.extxyz", [crystal]))],
        Options(r_max=5.4, rdf_bins=540, dipole_bins=54, progress=False),
    )
    g = result["g_OO"]
    r = g["r"]
    assert g["g"][r < a / np.sqrt(2) - 0.02].max() == 0.0
    assert r[np.flatnonzero(g["g"])[0]] == pytest.approx(a / np.sqrt(2), abs=0.01)
    assert g["coordination"][r < a / np.sqrt(2) + 0.05][-1] == pytest.approx(12.0)
    assert g["coordination"][r < a + 0.05][-1] == pytest.approx(18.0)
    filled = result["c_L"]["pairs"] > 0
    assert np.allclose(result["c_L"]["c"][filled], 1.0) and np.allclose(result["c_T"]["c"][filled], 1.0)
    assert result["molecules"]["proton_hops"] == 0 and result["molecules"]["not_whole_molecule_frames"] == 0


def test_a_molecule_that_breaks_is_counted_from_the_frame_it_breaks(tmp_path):
    """From frame 3 on, one H sits 1.0 Å from another molecule's H (the H–H pair of a model's spurious region): the
    molecules are no longer all whole, and the time of the first frame where they are not is reported."""
    intact = water(fcc_centers(2, 6.0), np.eye(3) * 12.0)
    broken = intact.copy()
    broken.positions[1] = broken.positions[3 * 2 + 1] + [1.0, 0.0, 0.0]  # molecule 0's H beside molecule 2's
    assert broken.get_distances(1, list(range(0, len(broken), 3)), mic=True).min() > 1.0
    frames = [intact.copy() for _ in range(3)] + [broken.copy() for _ in range(3)]
    path = write_extxyz(tmp_path / "b.extxyz", frames, 0.02)
    m = analyze([str(path)], Options(progress=False))["molecules"]
    assert m["not_whole_molecule_frames"] > 0 and m["not_whole_molecule_frames"] % 3 == 0  # frames 3, 4, 5 alike
    assert m["first_not_whole_ps"] == pytest.approx(0.06)
    h = [i for i, symbol in enumerate(broken.get_chemical_symbols()) if symbol == "H"]
    closest_hh = min(broken.get_distances(i, [j for j in h if j != i], mic=True).min() for i in h)
    assert closest_hh == pytest.approx(1.0, abs=1e-6)
    assert analyze([str(path)], Options(progress=False))["g_HH"]["closest"] == pytest.approx(closest_hh, abs=1e-6)
    path = write_extxyz(tmp_path / "i.extxyz", [intact.copy() for _ in range(3)], 0.02)
    m = analyze([str(path)], Options(progress=False))["molecules"]
    assert m["not_whole_molecule_frames"] == 0 and m["first_not_whole_ps"] is None


def test_random_dipoles_are_uncorrelated_and_isotropic(tmp_path):
    """Independent random orientations (molecules on a jittered grid, 3 Å apart so that no H is closer to another
    molecule's O): c_L, c_T ≈ 0 and F(cos θ, φ) ≈ 0 within their errors."""
    rng = np.random.default_rng(7)
    grid = np.array(list(np.ndindex(5, 5, 5))) * 3.0
    frames = [water(grid + rng.normal(0, 0.1, grid.shape), np.eye(3) * 15.0, rng=rng) for _ in range(60)]
    result = analyze(
        [str(write_extxyz(tmp_path / "iso.extxyz", frames))],
        Options(r_max=6.0, dipole_bins=6, orientation_bins=(4, 8), n_blocks=10, progress=False),
    )
    # errors from 10 blocks: z follows Student's t with 9 degrees of freedom, |t| > 5.5 has p ≈ 4e-4
    for key in ("c_L", "c_T"):
        c, err = result[key]["c"][2:], result[key]["err"][2:]
        assert np.all(np.abs(c) < 0.1) and np.all(np.abs(c) / err < 5.5), key
    f, err = result["orientation_F"]["F"], result["orientation_F"]["err"]
    z = f / err
    assert np.all(np.abs(f) < 0.3) and np.all(np.abs(z) < 5.5)  # ~230 samples a bin: ±7 % each
    assert np.mean(z**2) < 2.5
    moments = result["orientation_moments"]
    assert moments["component"] == ["u_x", "u_y", "u_z", "Q_xx", "Q_yy", "Q_xy", "Q_xz", "Q_yz"]
    value, err = np.asarray(moments["value"]), np.asarray(moments["err"])
    assert np.all(np.abs(value) < 0.05) and np.all(np.abs(value) / err < 5.5)  # 7500 samples: ±0.007 each


def test_rotating_the_trajectory_rotates_the_orientation_free_energy(tmp_path):
    """u biased towards +z; the whole trajectory turned by π about x and by one φ bin about z gives the same F
    with cos θ → −cos θ, φ → −φ + one bin."""
    rng = np.random.default_rng(11)
    n_cos, n_phi = 6, 12
    frames = []
    for _ in range(20):
        directions = rng.normal([0.4, 0.2, 1.0], 0.8, (80, 3))
        frames.append(water(rng.uniform(0, 20.0, (80, 3)), np.zeros((3, 3)), directions, rng, pbc=False))
    turn = 2 * np.pi / n_phi
    rz = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    rotation = rz @ np.diag([1.0, -1.0, -1.0])
    rotated = [Atoms(f.symbols, positions=f.positions @ rotation.T) for f in frames]
    options = Options(orientation_bins=(n_cos, n_phi), progress=False)
    plain_result = analyze([str(write_extxyz(tmp_path / "plain.extxyz", frames))], options)
    turned_result = analyze([str(write_extxyz(tmp_path / "turned.extxyz", rotated))], options)
    plain, turned = plain_result["orientation_F"], turned_result["orientation_F"]
    expected = np.roll(plain["F"][::-1, ::-1], 1, axis=1)
    assert np.nanmax(np.abs(plain["F"])) > 0.5  # the test distribution is far from isotropic
    np.testing.assert_allclose(turned["F"], expected, atol=1e-9)
    np.testing.assert_allclose(turned["err"], np.roll(plain["err"][::-1, ::-1], 1, axis=1), atol=1e-9)

    def vector_and_tensor(moments):
        ux, uy, uz, qxx, qyy, qxy, qxz, qyz = moments["value"]
        return np.array([ux, uy, uz]), np.array([[qxx, qxy, qxz], [qxy, qyy, qyz], [qxz, qyz, -qxx - qyy]])

    u, q = vector_and_tensor(plain_result["orientation_moments"])
    u_turned, q_turned = vector_and_tensor(turned_result["orientation_moments"])
    # the dipoles lean towards +z: ⟨u⟩ has a large z part and Q_zz = ⟨(3 u_z² − 1) / 2⟩ > 0
    assert u[2] > 0.3 and q[2, 2] > 0.1
    np.testing.assert_allclose(u_turned, rotation @ u, atol=1e-9)
    np.testing.assert_allclose(q_turned, rotation @ q @ rotation.T, atol=1e-9)


def test_rdf_of_a_water_frame_matches_ase(tmp_path):
    """Same bins, same g(r) — up to ASE's (and LAMMPS compute rdf's) normalisation of like pairs by N_A² where petmd
    counts the N_A(N_A − 1) distinct pairs (so that g → 1 at large r, as the ideal-gas test checks)."""
    from ase.geometry.rdf import get_rdf

    from petmd.helpers.structures import liquid_water

    atoms = liquid_water()
    result = analyze(
        [str(write_extxyz(tmp_path / "frame.extxyz", [atoms]))], Options(r_max=6.0, rdf_bins=60, progress=False)
    )
    counts = {"O": 64, "H": 128}
    for a, b in (("O", "O"), ("O", "H"), ("H", "H")):
        reference, r = get_rdf(atoms, 6.0, 60, elements=(a, b))
        like = (counts[a] - 1) / counts[a] if a == b else 1.0
        np.testing.assert_allclose(result[f"g_{a}{b}"]["r"], r)
        np.testing.assert_allclose(result[f"g_{a}{b}"]["g"] * like, reference, rtol=1e-10, atol=1e-10)
        assert reference.max() > 1.5
    oh = result["g_OH"]
    assert oh["coordination"][oh["r"] < 1.3][-1] == pytest.approx(2.0, abs=0.01)  # each O's two covalent H
    assert np.all(np.isnan(oh["err"]))  # one frame: no block error


# --- dynamics --------------------------------------------------------------------------------------------------


def test_random_walk_diffusion_is_recovered(tmp_path):
    """Gaussian steps of σ per axis every Δt: D = σ²/(2Δt). Written as a LAMMPS dump with wrapped coordinates and
    image flags, time from --timestep."""
    rng = np.random.default_rng(5)
    n, n_frames, sigma, timestep, every = 400, 300, 0.1, 0.001, 10
    length = 12.0
    positions = rng.uniform(0, length, (n, 3)) + np.cumsum(rng.normal(0, sigma, (n_frames, n, 3)), axis=0)
    frames = [Atoms(f"O{n}", positions=p, cell=np.eye(3) * length, pbc=True) for p in positions]
    dump = write_dump(tmp_path / "walk.dump", frames, steps=np.arange(n_frames) * every)
    result = analyze([str(dump)], Options(types=["O", "H"], timestep=timestep, progress=False, rdf_bins=10))
    dt = every * timestep
    expected = sigma**2 / (2 * dt) * (1 - 1 / n)  # the centre-of-mass motion is taken out
    d = result["diffusion_O"]
    assert d["err"] < 0.05 * expected
    assert abs(d["value"] - expected) < 4 * d["err"], d
    msd = result["msd_O"]
    assert msd["msd"][10] == pytest.approx(6 * expected * msd["t"][10], rel=0.05)
    # wrapped coordinates without image flags: unwrapped from the moves between frames, same answer
    plain = write_dump(tmp_path / "wrapped.dump", frames, steps=np.arange(n_frames) * every, images=False)
    again = analyze([str(plain)], Options(types=["O", "H"], timestep=timestep, progress=False, rdf_bins=10))
    assert again["diffusion_O"]["value"] == pytest.approx(d["value"], rel=1e-6)


def test_orientation_autocorrelation_of_frozen_and_random_molecules(tmp_path):
    rng = np.random.default_rng(2)
    centers = rng.uniform(0, 12.0, (30, 3))
    frozen = [water(centers, np.eye(3) * 12.0, rng=np.random.default_rng(9)) for _ in range(12)]
    shaken = [frozen[0]] + [water(centers, np.eye(3) * 12.0, rng=rng) for _ in range(11)]
    options = (
        Options(frame_interval=0.01, progress=False, blocks=3)
        if False
        else Options(frame_interval=0.01, progress=False, n_blocks=3)
    )
    c_frozen = analyze([str(write_extxyz(tmp_path / "frozen.extxyz", frozen))], options)["c_uu"]
    c_shaken = analyze([str(write_extxyz(tmp_path / "shaken.extxyz", shaken))], options)["c_uu"]
    assert np.allclose(c_frozen["c"], 1.0)
    assert c_shaken["c"][0] == pytest.approx(1.0) and np.all(np.abs(c_shaken["c"][1:]) < 0.35)


def test_single_molecule_angular_momentum_and_torque(tmp_path):
    """A rigid molecule spinning about z at ω: L = I_zz ω along z; forces F = ω × (ω × r) m give zero torque."""
    omega = np.array([0.0, 0.0, 2.0])  # rad/ps
    masses = np.array([15.999, 1.008, 1.008])
    base = LOCAL - (masses[:, None] * LOCAL).sum(0) / masses.sum()
    frames = []
    for k in range(10):
        angle = omega[2] * 0.01 * k
        rz = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        r = base @ rz.T
        atoms = Atoms("OH2", positions=r + 5.0)
        from ase.units import fs

        atoms.set_velocities(np.cross(omega, r) / (1000 * fs))
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms.calc = SinglePointCalculator(
            atoms, forces=masses[:, None] * np.cross(omega, np.cross(omega, r)), energy=-14.0
        )
        frames.append(atoms)
    result = analyze([str(write_extxyz(tmp_path / "spin.extxyz", frames, interval=0.01))], Options(progress=False))
    a = result["angular_momentum"]
    inertia = float(np.sum(masses * (base[:, 0] ** 2 + base[:, 1] ** 2)))
    np.testing.assert_allclose(a["L"], np.tile([0, 0, inertia * 2.0], (10, 1)), atol=1e-6)
    assert a["mean_abs_torque"]["value"] < 1e-6  # extxyz keeps 8 decimals
    assert abs(a["L_norm_drift"]["value"]) < 1e-6
    assert result["potential_energy"]["value"] == pytest.approx(-14.0 / 3)


# --- files -----------------------------------------------------------------------------------------------------


def _small_dump(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    frames = [water(rng.uniform(0, 9.0, (8, 3)), np.eye(3) * 9.0, rng=rng) for _ in range(3)]
    return write_dump(tmp_path / "small.dump", frames, steps=[0, 10, 20])


def test_truncated_and_malformed_dumps_name_file_and_line(tmp_path):
    dump = _small_dump(tmp_path)
    lines = dump.read_text().splitlines()
    truncated = tmp_path / "truncated.dump"
    truncated.write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(PetmdError, match=r"truncated\.dump:\d+: .*truncated"):
        list(read_lammps_dump(truncated, ["O", "H"]))
    broken = list(lines)
    broken[45] = "17 2 1.0 abc 3.0 0 0 0"
    malformed = tmp_path / "malformed.dump"
    malformed.write_text("\n".join(broken) + "\n")
    with pytest.raises(PetmdError, match=r"malformed\.dump:46: not a number"):
        list(read_lammps_dump(malformed, ["O", "H"]))
    short = list(lines)
    short[45] = "17 2 1.0"
    (tmp_path / "short.dump").write_text("\n".join(short) + "\n")
    with pytest.raises(PetmdError, match=r"short\.dump:46: expected 8 values"):
        list(read_lammps_dump(tmp_path / "short.dump", ["O", "H"]))
    bounds = list(lines)
    bounds[39] = "0 9.0 oops"
    (tmp_path / "bounds.dump").write_text("\n".join(bounds) + "\n")
    with pytest.raises(PetmdError, match=r"bounds\.dump:40: malformed box bounds"):
        list(read_lammps_dump(tmp_path / "bounds.dump", ["O", "H"]))
    with pytest.raises(PetmdError, match="--types O H"):
        list(read_lammps_dump(dump))
    assert main(["observables", str(truncated), "--types", "O", "H", "-o", str(tmp_path / "out")]) == 2


def test_triclinic_dump_box(tmp_path):
    """A restricted-triclinic BOX BOUNDS block (bounding box + tilts) gives back the cell LAMMPS had."""
    cell = np.array([[10.0, 0, 0], [2.0, 9.0, 0], [-1.5, 1.0, 8.0]])
    xy, xz, yz = 2.0, -1.5, 1.0
    lo = np.zeros(3)
    bounds = [
        (lo[0] + min(0, xy, xz, xy + xz), lo[0] + 10.0 + max(0, xy, xz, xy + xz), xy),
        (lo[1] + min(0, yz), lo[1] + 9.0 + max(0, yz), xz),
        (0.0, 8.0, yz),
    ]
    text = ["ITEM: TIMESTEP", "0", "ITEM: NUMBER OF ATOMS", "1", "ITEM: BOX BOUNDS xy xz yz pp pp ff"]
    text += [f"{a} {b} {t}" for a, b, t in bounds] + ["ITEM: ATOMS id element xs ys zs", "1 O 0.5 0.5 0.5"]
    (tmp_path / "tri.dump").write_text("\n".join(text) + "\n")
    (frame,) = read_lammps_dump(tmp_path / "tri.dump")
    np.testing.assert_allclose(frame.cell, cell)
    np.testing.assert_allclose(frame.positions[0], 0.5 * cell.sum(0))
    assert frame.pbc.tolist() == [True, True, False] and frame.symbols.tolist() == ["O"]


def test_log_targets_minimization_and_drift(tmp_path):
    log = tmp_path / "log.lammps"
    rows = "\n".join(
        f"{s} {s * 0.0005:.4f} {300 + (s % 7)} {-10 + 1e-4 * s} {-9.0 + 2e-5 * s}" for s in range(0, 220, 20)
    )
    log.write_text(f"""LAMMPS (22 Jul 2025 - Update 4)
units metal
variable temp index 300
fix t all temp/csvr ${{temp}} ${{temp}} 0.1 5
fix t all temp/csvr 300 300 0.1 5
pair_coeff * * O H
minimize 1e-8 1e-8 100 1000
   Step          PotEng
         0   -5
         5   -6
Loop time of 0.1 on 1 procs for 5 steps with 3 atoms
timestep 0.0005
run 200
   Step          Time           Temp          PotEng       Econserve
{rows}
Loop time of 1 on 1 procs for 200 steps with 3 atoms

Performance: 8.577 ns/day, 2.798 hours/ns, 198.542 timesteps/s, 595.626 atom-step/s
92.3% CPU use with 1 MPI tasks x 1 OpenMP threads
""")
    parsed = read_lammps_log(log)
    assert parsed.loops == [
        {"wall_s": 0.1, "procs": 1, "steps": 5, "cpu_fraction": None},
        {"wall_s": 1.0, "procs": 1, "steps": 200, "cpu_fraction": pytest.approx(0.923)},
    ]
    assert parsed.target_temperature == 300.0 and parsed.timestep == 0.0005 and parsed.minimizations == 1
    assert parsed.type_elements == ["O", "H"] and parsed.n_atoms == 3
    assert parsed.thermo["Step"][0] == 0 and len(parsed.thermo["Step"]) == 11
    result = analyze([str(log)], Options(progress=False))
    drift = result["conserved_drift"]
    assert drift["value"] == pytest.approx(2e-5 * 1e3 / 3 / 0.0005) and drift["quantity"] == "Econserve"
    assert result["system"]["target_temperature_K"] == 300.0
    (tmp_path / "real.log").write_text("LAMMPS (22 Jul 2025)\nunits real\n")
    with pytest.raises(PetmdError, match="units real"):
        analyze([str(tmp_path / "real.log")], Options(progress=False))


@pytest.mark.parametrize("line", ["pair_coeff * * pet 1 O H", "pair_coeff * * pet O H # the plain term"])
def test_log_elements_from_a_hybrid_sub_style(tmp_path, line):
    """Multiple time stepping writes pair_coeff * * pet 1 O H: the elements are still read from it."""
    (tmp_path / "log.lammps").write_text(f"LAMMPS (22 Jul 2025)\nunits metal\n{line}\npair_coeff * * pet 2 O H\n")
    assert read_lammps_log(tmp_path / "log.lammps").type_elements == ["O", "H"]


# --- compare ---------------------------------------------------------------------------------------------------


def _observables_dir(tmp_path: Path, name: str, result: dict) -> Path:
    write_outputs(result, tmp_path / name)
    return tmp_path / name


def test_compare_refuses_different_conditions_unless_forced(tmp_path):
    rng = np.random.default_rng(4)
    frames = [water(rng.uniform(0, 10.0, (12, 3)), np.eye(3) * 10.0, rng=rng) for _ in range(10)]
    small = analyze([str(write_extxyz(tmp_path / "a.extxyz", frames))], Options(progress=False))
    bigger = [water(rng.uniform(0, 10.0, (13, 3)), np.eye(3) * 10.0, rng=rng) for _ in range(10)]
    other = analyze([str(write_extxyz(tmp_path / "b.extxyz", bigger))], Options(progress=False))
    a, b = _observables_dir(tmp_path, "a", small), _observables_dir(tmp_path, "b", other)
    with pytest.raises(PetmdError, match=r"composition .* --force"):
        compare_runs([a, b])
    forced = compare_runs([a, b], force=True)
    assert forced["json"]["comparisons"][0]["conditions_differ"]
    hot = json.loads((a / "observables.json").read_text())
    hot["system"]["target_temperature_K"] = 330.0
    (tmp_path / "hot").mkdir()
    (tmp_path / "hot" / "observables.json").write_text(json.dumps(hot))
    with pytest.raises(PetmdError, match="temperature 300 K vs 330 K|target temperature"):
        a_json = json.loads((a / "observables.json").read_text())
        a_json["system"]["target_temperature_K"] = 300.0
        (a / "observables.json").write_text(json.dumps(a_json))
        compare_runs([a, tmp_path / "hot"])
    with pytest.raises(PetmdError, match="no observables.json"):
        compare_runs([a, tmp_path])


def test_compare_does_not_judge_diffusion_fitted_over_different_lags(tmp_path):
    def run(name: str, value: float, fit: list) -> Path:
        entry = {"value": value, "err": 0.01, "fit_ps": fit, "n_blocks": 5, "unit": "Å²/ps"}
        temperature = {"value": 300.0, "err": 1.0, "n_blocks": 5, "unit": "K"}
        result = {"inputs": [name], "system": {}, "diffusion_O": entry, "temperature": temperature}
        (tmp_path / name).mkdir()
        (tmp_path / name / "observables.json").write_text(json.dumps(result))
        return tmp_path / name

    long, short = run("long", 0.13, [0.4, 2.0]), run("short", 0.46, [0.04, 0.2])
    fast = run("fast", 0.46, [0.4, 2.0])
    result = compare_runs([long, short, fast])
    rows = {(c["run"], r["observable"]): r for c in result["json"]["comparisons"] for r in c["rows"]}
    # 23 standard errors apart, but a slope over the ballistic 0.04-0.2 ps is not the diffusive one
    verdict = rows[("short", "diffusion_O")]["verdict"]
    assert verdict.startswith("not comparable: fitted over 0.4–2 ps against 0.04–0.2 ps"), verdict
    assert "same petmd observables --fit" in verdict
    assert rows[("short", "temperature")]["verdict"] == "consistent"
    assert rows[("fast", "diffusion_O")]["verdict"] == "differs"  # same window: judged as usual
    assert "not comparable: diffusion_O" in result["text"]
    assert "not comparable: diffusion_O" in write_report(result, tmp_path / "report").read_text()


def test_replicas_merge_to_their_mean_with_the_larger_of_spread_and_block_errors():
    """Two replicas: the mean; the error from their spread where they disagree, from their block errors where they
    agree; curves cut to the lags both have; D fitted over different windows refused."""
    from petmd.observables.replicas import merge_replicas

    def replica(temperature: float, g_peak: float, lags: int, fit=(0.5, 1.25)) -> dict:
        return {
            "system": {"n_atoms": 192, "n_frames": 50, "time_span_ps": 2.5},
            "temperature": {"value": temperature, "err": 1.0, "n_blocks": 5, "unit": "K"},
            "diffusion_O": {"value": 0.1, "err": 0.01, "n_blocks": 5, "fit_ps": list(fit)},
            "g_OO": {
                "r": [2.5, 2.8],
                "g": [1.0, g_peak],
                "err": [0.1, 0.1],
                "coordination": [1.0, 4.0],
                "coordination_err": [0.2, 0.2],
                "closest": 2.4 + g_peak / 100,
            },
            "c_uu": {"t": [0.02 * k for k in range(lags)], "c": [1.0] * lags, "err": [0.0] + [0.01] * (lags - 1)},
            "c_L": {"r": [3.0, 3.5], "c": [0.2, 0.1], "err": [0.01, 0.01], "pairs": [10.0, 20.0]},
            "molecules": {"not_whole_molecule_frames": 0, "first_not_whole_ps": None, "proton_hops": 2},
            "notes": ["a note"],
        }

    merged = merge_replicas([replica(290.0, 3.0, 10), replica(310.0, 3.2, 8)])
    assert merged["replicas"] == 2 and merged["system"]["n_frames"] == 100 and merged["notes"] == ["a note"]
    temperature = merged["temperature"]
    assert temperature["value"] == pytest.approx(300.0) and temperature["n_blocks"] == 2
    assert temperature["err"] == pytest.approx(np.std([290.0, 310.0], ddof=1) / np.sqrt(2))  # spread: 10 K
    assert merged["diffusion_O"]["err"] == pytest.approx(np.sqrt(2) * 0.01 / 2)  # agree: block errors combined
    g = merged["g_OO"]
    assert g["g"] == pytest.approx([1.0, 3.1]) and g["err"][1] == pytest.approx(0.1)  # spread 0.1 > 0.0707
    assert g["coordination"] == pytest.approx([1.0, 4.0]) and g["closest"] == pytest.approx(2.43)
    assert len(merged["c_uu"]["t"]) == len(merged["c_uu"]["c"]) == 8 and merged["molecules"]["proton_hops"] == 4
    assert merged["c_L"]["pairs"] == [20.0, 40.0] and merged["c_L"]["c"] == pytest.approx([0.2, 0.1])
    with pytest.raises(PetmdError, match="diffusion_O: the replicas fitted it over different lag windows"):
        merge_replicas([replica(300.0, 3.0, 10), replica(300.0, 3.0, 10, fit=(0.1, 0.5))])
    assert merge_replicas([replica(300.0, 3.0, 10)])["temperature"]["err"] == 1.0


def test_replicas_cli_refuses_runs_of_other_conditions(tmp_path, capsys):
    folders = []
    for name, temperature in (("cold", 250.0), ("warm", 350.0)):
        entry = {"value": temperature, "err": 1.0, "n_blocks": 5, "unit": "K"}
        (tmp_path / name).mkdir()
        (tmp_path / name / "observables.json").write_text(json.dumps({"inputs": [name], "temperature": entry}))
        folders.append(str(tmp_path / name))
    assert main(["replicas", *folders, "-o", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert "these are not replicas of one simulation" in err and "temperature 250.0" in err
    assert main(["replicas", folders[0], "-o", str(tmp_path / "merged")]) == 2
    assert "at least two folders" in capsys.readouterr().err and not (tmp_path / "merged").exists()


# --- real LAMMPS runs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """The liquid-water example's NVT input, 64 molecules, 300 K, two thermostat/velocity seeds, 0.2 ps each."""
    from petmd.helpers.lammps_run import run_lammps
    from petmd.helpers.structures import liquid_water, write_lammps_data

    root = tmp_path_factory.mktemp("seeds")
    runs = []
    for seed in (11, 12):
        out = root / f"seed{seed}"
        out.mkdir()
        write_lammps_data(liquid_water(), out / "water.data")
        run_lammps(
            REPO / "examples/liquid-water/nvt.lammps",
            out,
            {
                "model": REPO / "models/pet-water-small.pt",
                "pairfile": REPO / "examples/pair-pet.lammps",
                "data": "water.data",
                "steps": 400,
                "seed": seed,
                "symevery": 100000,
                "dumpevery": 10,
                "thermoevery": 10,
            },
            log="nvt.log",
        )
        runs.append(out)
    return runs


@pytest.mark.slow
def test_dump_and_extxyz_of_the_same_run_agree(two_seeds, tmp_path):
    run = two_seeds[0]
    frames = []
    for frame in read_lammps_dump(run / "nvt.dump", ["O", "H"]):
        atoms = Atoms(list(frame.symbols), positions=frame.positions, cell=frame.cell, pbc=True)
        atoms.info["step"] = frame.step
        frames.append(atoms)
    xyz = write_extxyz(tmp_path / "nvt.extxyz", frames)
    options = Options(timestep=0.0005, progress=False)
    from_dump = analyze([str(run / "nvt.dump")], Options(types=["O", "H"], timestep=0.0005, progress=False))
    from_xyz = analyze([str(xyz)], options)
    keys = ("g_OO", "g_OH", "g_HH", "c_L", "c_T", "msd_O", "c_uu", "orientation_F", "orientation_moments")
    for key in keys + ("density", "diffusion_O"):
        for field, value in from_dump[key].items():
            if isinstance(value, np.ndarray) or isinstance(value, float):
                np.testing.assert_allclose(from_xyz[key][field], value, rtol=1e-7, atol=1e-9, err_msg=key)


@pytest.mark.slow
def test_two_seeds_consistent_and_shifted_rdf_differs(two_seeds, tmp_path):
    dirs = []
    for run in two_seeds:
        out = tmp_path / run.name
        assert (
            main(
                [
                    "observables",
                    str(run / "nvt.dump"),
                    str(run / "nvt.log"),
                    "-o",
                    str(out),
                    "--json",
                    "--discard",
                    "0.05",
                ]
            )
            == 0
        )  # the first 0.05 ps: cooling from the 300 K start
        dirs.append(out)
    observables = json.loads((dirs[0] / "observables.json").read_text())
    assert observables["system"]["target_temperature_K"] == 300.0 and observables["system"]["constant_volume"]
    assert {
        "g_OO",
        "g_OH",
        "g_HH",
        "diffusion_O",
        "c_L",
        "c_T",
        "orientation_F",
        "orientation_moments",
        "c_uu",
        "conserved_drift",
    } <= observables.keys()
    assert (dirs[0] / "orientation_moments.csv").read_text().startswith("component,value,err\nu_x,")
    same = compare_runs(dirs)
    rows = same["json"]["comparisons"][0]["rows"]
    assert "orientation_moments" in {row["observable"] for row in rows}
    assert len(rows) >= 10 and all(row["verdict"] == "consistent" for row in rows), same["text"]
    # the two seeds as replicas of one run: `petmd replicas`, read by compare like any run
    assert main(["replicas", *map(str, dirs), "-o", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "observables.json").read_text())
    temperatures = [json.loads((d / "observables.json").read_text())["temperature"]["value"] for d in dirs]
    assert merged["replicas"] == 2 and merged["temperature"]["value"] == pytest.approx(np.mean(temperatures))
    assert (tmp_path / "merged" / "rdf.png").exists() and merged["c_uu"]["n_blocks"] == 2
    against = compare_runs([dirs[0], tmp_path / "merged"])["json"]["comparisons"][0]["rows"]
    assert len(against) >= 10 and all(row["verdict"] == "consistent" for row in against)
    shifted = json.loads((dirs[1] / "observables.json").read_text())
    r = np.array(shifted["g_OO"]["r"])
    shifted["g_OO"]["g"] = np.interp(r - 0.1, r, shifted["g_OO"]["g"]).tolist()  # peak 0.1 Å further out
    (tmp_path / "shifted").mkdir()
    (tmp_path / "shifted" / "observables.json").write_text(json.dumps(shifted))
    differs = compare_runs([dirs[0], tmp_path / "shifted"])
    verdicts = {row["observable"]: row["verdict"] for row in differs["json"]["comparisons"][0]["rows"]}
    assert verdicts["g_OO"] == "differs" and verdicts["g_OH"] == "consistent"
    report = write_report(differs, tmp_path / "report")
    text = report.read_text()
    assert "g_OO" in text and "differs" in text and (tmp_path / "report" / "rdf.png").exists()
    assert main(["compare", str(dirs[0]), str(dirs[1]), "-o", str(tmp_path / "cli.md")]) == 0
    assert (tmp_path / "cli.md").exists() and (tmp_path / "dynamics.png").exists()


def test_cli_help(capsys):
    for command in ("observables", "compare"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
    assert "--threshold" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["[]", "null", '{"density": 1.0}'])
def test_compare_refuses_a_file_that_is_not_an_observables_json(tmp_path, text):
    from petmd.observables.compare import compare_runs

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "observables.json").write_text(text)
    with pytest.raises(PetmdError, match="is not an observables.json of `petmd observables`"):
        compare_runs([tmp_path / "a", tmp_path / "b"])
