"""The exported TorchScript model and the ASE calculator agree with the eager model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import FORMAT_1_MODEL, frame, small_pet, water_box, write_checkpoint
from petmd.batch import collate
from petmd.calculator import PETCalculator
from petmd.errors import PetmdError
from petmd.export import export_checkpoint
from petmd.exported import FORMAT_VERSION
from petmd.loading import load_model


def eager(model, atoms):
    batch = collate([frame(atoms)])
    out = model(**batch.model_inputs(), compute_virial=True)
    return {k: v.detach()[0] if k in ("energy", "virial") else v.detach() for k, v in out.items()}


@pytest.fixture(scope="module")
def systems():
    return {
        "box": water_box(2, seed=7, cell_tilt=0.6),
        "molecule": Atoms("OHH", positions=[[0, 0, 0], [0.96, 0.1, 0], [-0.24, 0.93, 0.05]]),
    }


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_exported_equals_eager(tmp_path, systems, dtype, tol):
    model64 = small_pet(seed=11)
    ckpt = write_checkpoint(tmp_path / "m.ckpt", model64)
    meta = export_checkpoint(ckpt, tmp_path / "m.pt", dtype=dtype)
    assert meta["dtype"] == dtype and meta["species"] == ["H", "O"]
    assert meta["interaction_range"] == pytest.approx(2 * 4.0)
    exported = load_model(tmp_path / "m.pt")
    assert isinstance(exported.module, torch.jit.ScriptModule)
    for name, atoms in systems.items():
        ref = eager(model64, atoms)
        out = {k: v.detach() for k, v in exported(frame(atoms)).items()}
        baseline = model64.composition_energies[model64.species_index(torch.from_numpy(atoms.numbers))]
        # float32 rounding is relative to the magnitudes summed: the per-atom energies above the baseline
        learned = {"energy": (ref["energies"] - baseline).abs().sum(), "energies": ref["energies"] - baseline}
        for key in ("energy", "energies", "forces", "virial"):
            assert out[key].dtype == torch.float64
            # relative to the largest magnitude of the quantity (energies: the part above the baseline)
            scale = float(learned.get(key, ref[key]).abs().max())
            err = float((out[key] - ref[key]).abs().max())
            assert err <= tol * scale, (name, key, err, scale)


def test_exported_batched_method_matches_forward(tmp_path, systems):
    ckpt = write_checkpoint(tmp_path / "m.ckpt", small_pet(seed=3))
    export_checkpoint(ckpt, tmp_path / "m.pt", dtype="float64")
    exported = load_model(tmp_path / "m.pt")
    frames = [frame(a) for a in systems.values()]
    together = exported.batched(collate(frames), compute_virial=True)
    for k, f in enumerate(frames):
        alone = exported(f)
        assert float(together["energy"][k].detach()) == pytest.approx(float(alone["energy"].detach()), rel=1e-13)


@pytest.mark.parametrize("mode", ["none", "grid:2"])
def test_exported_chunked_evaluation_changes_nothing(tmp_path, systems, mode):
    ckpt = write_checkpoint(tmp_path / "m.ckpt", small_pet(seed=5))
    export_checkpoint(ckpt, tmp_path / "m.pt", dtype="float64")
    exported = load_model(tmp_path / "m.pt")
    exported.set_symmetrization(mode)
    f = frame(systems["box"])
    exported.set_chunk_atoms(0)
    plain = {k: v.detach() for k, v in exported(f).items()}
    exported.set_chunk_atoms(7)
    chunked = exported(f)
    for key in ("energy", "energies", "forces", "virial"):
        torch.testing.assert_close(chunked[key], plain[key], rtol=0, atol=1e-10 * float(plain[key].abs().max()))
    with pytest.raises(PetmdError, match="chunk size must be at least 0 atoms"):
        exported.set_chunk_atoms(-2)


def test_metadata_is_readable_without_petmd(tmp_path):
    ckpt = write_checkpoint(tmp_path / "m.ckpt", small_pet())
    export_checkpoint(ckpt, tmp_path / "m.pt")
    extra = {"petmd.json": ""}
    torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    meta = json.loads(extra["petmd.json"])
    for key in (
        "format",
        "format_version",
        "species",
        "cutoff",
        "interaction_range",
        "dtype",
        "units",
        "hyperparameters",
        "symmetrize",
    ):
        assert key in meta
    assert meta["units"] == "metal"


def test_ghost_atoms_with_energy_mask_reproduce_the_periodic_result(tmp_path):
    """LAMMPS across ranks: periodic images within the interaction range are explicit ghost nodes (no cell
    shifts), only local energies are summed, ghost forces are folded back onto their owners."""
    from petmd.neighbors import neighbor_graph

    model = small_pet(seed=5)  # 2 GNN layers: interaction range 2·R_c = 8 Å
    ckpt = write_checkpoint(tmp_path / "m.ckpt", model)
    export_checkpoint(ckpt, tmp_path / "m.pt", dtype="float64")
    loaded = load_model(tmp_path / "m.pt")
    box = water_box(2, seed=9, cell_tilt=0.5)
    ref = {k: v.detach() for k, v in loaded(frame(box)).items()}

    n = len(box)
    cell = box.cell.array
    frac = box.get_scaled_positions()
    positions, numbers, owner = [box.positions], [box.numbers], [np.arange(n)]
    reach = int(np.ceil(8.0 / min(box.cell.lengths()))) + 1
    for shift in np.ndindex(*(2 * reach + 1,) * 3):
        s = np.array(shift) - reach
        if not s.any():
            continue
        image = (frac + s) @ cell
        # keep images within the interaction range of the cell (distance in fractional terms, generously)
        keep = np.all((frac + s > -8.0 / box.cell.lengths() - 1e-9) & (frac + s < 1 + 8.0 / box.cell.lengths()), axis=1)
        positions.append(image[keep])
        numbers.append(box.numbers[keep])
        owner.append(np.arange(n)[keep])
    pos, num, owner = np.concatenate(positions), np.concatenate(numbers), np.concatenate(owner)
    assert len(pos) > 10 * n
    edge_index, shifts = neighbor_graph(pos, np.zeros((3, 3)), [False] * 3, 4.0)
    mask = torch.zeros(len(pos), dtype=torch.bool)
    mask[:n] = True
    out = loaded.module(
        torch.from_numpy(pos),
        torch.from_numpy(num),
        torch.zeros(3, 3, dtype=torch.float64),
        torch.from_numpy(edge_index),
        torch.from_numpy(shifts),
        mask,
    )
    assert float(out["energy"].detach()) == pytest.approx(float(ref["energy"].detach()), rel=1e-12)
    torch.testing.assert_close(out["energies"][:n].detach(), ref["energies"], rtol=0, atol=1e-10)
    folded = torch.zeros(n, 3, dtype=torch.float64).index_add(0, torch.from_numpy(owner), out["forces"].detach())
    torch.testing.assert_close(folded, ref["forces"], rtol=0, atol=1e-10)
    torch.testing.assert_close(out["virial"].detach(), ref["virial"], rtol=0, atol=1e-9)


def test_ase_calculator_on_checkpoint_and_exported(tmp_path, systems):
    model = small_pet(seed=13)
    ckpt = write_checkpoint(tmp_path / "m.ckpt", model)
    export_checkpoint(ckpt, tmp_path / "m.pt", dtype="float64")
    box = systems["box"]
    ref = eager(model, box)
    for source in (ckpt, tmp_path / "m.pt"):
        atoms = box.copy()
        atoms.calc = PETCalculator(source)
        assert atoms.get_potential_energy() == pytest.approx(float(ref["energy"]), rel=1e-12)
        np.testing.assert_allclose(atoms.get_forces(), ref["forces"].numpy(), atol=1e-10)
        np.testing.assert_allclose(atoms.get_potential_energies().sum(), atoms.get_potential_energy(), rtol=1e-12)
        stress = atoms.get_stress(voigt=False)
        virial = ref["virial"].numpy()
        np.testing.assert_allclose(stress, -0.5 * (virial + virial.T) / atoms.get_volume(), atol=1e-10)


def test_ase_stress_matches_finite_strain(tmp_path):
    model = small_pet(seed=17)
    ckpt = write_checkpoint(tmp_path / "m.ckpt", model)
    box = water_box(2, seed=2, cell_tilt=0.3)
    box.calc = PETCalculator(ckpt)
    stress = box.get_stress(voigt=False)
    h = 1e-5
    volume = box.get_volume()
    for a in range(3):
        for b in range(a, 3):
            energies = []
            for sign in (+1, -1):
                eps = np.eye(3)
                eps[a, b] += sign * h / 2
                eps[b, a] += sign * h / 2
                strained = box.copy()
                strained.set_cell(box.cell.array @ eps, scale_atoms=True)
                strained.calc = PETCalculator(ckpt)
                energies.append(strained.get_potential_energy())
            numeric = (energies[0] - energies[1]) / (2 * h) / volume
            assert numeric == pytest.approx(stress[a, b], abs=1e-7 + 1e-6 * np.abs(stress).max())


def layer_by_layer(module, n_layers, edge_args, reverse, vectors):
    """The documented loop of docs/model-interface.md §14 on one domain that holds every atom (reverse edges all
    local): summed layer energies and dE/dx for edge vectors ``vectors``."""
    d, n_edges = module.message_width(), reverse.shape[0]
    energy = torch.zeros(edge_args[0].shape[0], dtype=torch.float64)
    messages = [torch.zeros(0, d, dtype=torch.float64)]
    for k in range(n_layers - 1):
        e_k, tokens, used, _ = module.message_layer(k, *edge_args, vectors, messages[k])
        energy += e_k
        messages[k] = used
        messages.append(0.5 * (used + tokens[reverse]))
    gradient = torch.zeros(n_edges, 3, dtype=torch.float64)
    adjoint = torch.zeros(n_edges, d, dtype=torch.float64)
    for k in range(n_layers - 1, -1, -1):
        output_adjoint = torch.zeros(n_edges, d, dtype=torch.float64).index_add_(0, reverse, 0.5 * adjoint)
        e_k, g_k, m_k, _ = module.message_layer_backward(k, *edge_args, vectors, messages[k], output_adjoint)
        if k == n_layers - 1:
            energy += e_k
        gradient += g_k
        adjoint = 0.5 * adjoint + m_k
    return energy, gradient


@pytest.mark.parametrize("chunk,mode", [(0, "none"), (5, "none"), (5, "grid:2")])
def test_layer_by_layer_methods_reproduce_forward(tmp_path, systems, chunk, mode):
    """The message-exchange interface driven as documented, averaged over message_rotations(): the same energies,
    per-atom energies, forces and virial as forward, with and without chunks, plain and grid-averaged."""
    ckpt = write_checkpoint(tmp_path / "m.ckpt", small_pet(seed=9))
    export_checkpoint(ckpt, tmp_path / "m.pt", dtype="float64")
    loaded = load_model(tmp_path / "m.pt")
    module = loaded.module
    module.set_chunk_atoms(chunk)
    module.set_symmetrization(mode)
    f = frame(systems["box"])
    want = module(
        torch.from_numpy(f.positions),
        torch.from_numpy(f.numbers),
        torch.from_numpy(f.cell),
        torch.from_numpy(f.edge_index),
        torch.from_numpy(f.cell_shifts),
        torch.ones(f.n_atoms, dtype=torch.bool),
    )
    numbers = torch.from_numpy(f.numbers)
    edge_index = torch.from_numpy(f.edge_index)
    vectors = (
        torch.from_numpy(f.positions)[edge_index[1]]
        - torch.from_numpy(f.positions)[edge_index[0]]
        + torch.from_numpy(f.cell_shifts).double() @ torch.from_numpy(f.cell)
    )
    edge_args = (numbers, numbers[edge_index[1]], edge_index[0])
    energy = torch.zeros(f.n_atoms, dtype=torch.float64)
    gradient = torch.zeros_like(vectors)
    rotations, weights = module.message_rotations()
    assert rotations.shape[0] == (1 if mode == "none" else 18)  # (2L − 1)² · L for L = 2
    for rotation, weight in zip(rotations, weights):
        e, g = layer_by_layer(
            module, loaded.metadata["n_gnn_layers"], edge_args, torch.from_numpy(f.reverse), vectors @ rotation.T
        )
        energy += weight * e
        gradient += weight * (g @ rotation)  # back to the unrotated frame
    got = module.message_result(numbers, energy, edge_index, vectors, gradient, f.n_atoms)
    for key in ("energy", "energies", "forces", "virial"):
        scale = float(want[key].detach().abs().max())
        torch.testing.assert_close(got[key].detach(), want[key].detach(), rtol=0, atol=1e-11 * scale)
    module.set_symmetrization("ecse")
    with pytest.raises(torch.jit.Error, match="symmetrize ecse cannot exchange messages"):
        module.message_rotations()


def test_a_format_1_file_is_refused_with_how_to_re_export_it():
    with pytest.raises(PetmdError, match=r"format version 1, which this petmd no longer runs .*`petmd export"):
        load_model(FORMAT_1_MODEL)


def test_re_exporting_a_format_1_file_upgrades_it_with_the_same_results(tmp_path):
    meta = export_checkpoint(FORMAT_1_MODEL, tmp_path / "new.pt", dtype="float64")
    assert meta["format_version"] == FORMAT_VERSION and meta["training"]["exported_file"] == FORMAT_1_MODEL.name
    upgraded = load_model(tmp_path / "new.pt")
    old = torch.jit.load(str(FORMAT_1_MODEL))  # run as it was, through its own code
    f = frame(water_box(2, seed=8, cell_tilt=0.4))
    inputs = [torch.from_numpy(a) for a in (f.positions, f.numbers, f.cell, f.edge_index, f.cell_shifts)]
    with torch.jit.optimized_execution(False):
        want = old(*inputs, torch.ones(f.n_atoms, dtype=torch.bool))
    got = upgraded(f)
    for key in ("energy", "forces", "virial"):
        scale = float(want[key].detach().abs().max())
        assert float((got[key] - want[key]).detach().abs().max()) <= 1e-10 * scale, key


def test_float64_weights_keep_their_precision_through_checkpoint_and_re_export(tmp_path):
    """Weights trained in float64 (not representable in float32) survive reading a checkpoint, exporting in float64
    and re-exporting: the model is built in its dtype before its weights are loaded."""
    from petmd.checkpoint import load_checkpoint, model_from_checkpoint
    from petmd.loading import load_weights

    model = small_pet(seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-12 * torch.randn_like(p))  # below float32's resolution
    ckpt = write_checkpoint(tmp_path / "m.ckpt", model)
    export_checkpoint(ckpt, tmp_path / "m.pt", dtype="float64")
    read = {
        "checkpoint": model_from_checkpoint(load_checkpoint(ckpt)),
        "exported file": load_weights(tmp_path / "m.pt").pet,
    }
    for source, pet in read.items():
        for key, value in model.state_dict().items():
            assert torch.equal(pet.state_dict()[key], value), (source, key)
