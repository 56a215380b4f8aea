"""The C++ bridge (petmd._bridge): same numbers as the Python model, clear errors, and a domain graph whose ghost
folding and domain splitting change no result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.spatial import cKDTree

from conftest import CUTOFF, FORMAT_1_MODEL, frame, small_pet, water_box, with_metadata, write_checkpoint
from petmd import _bridge
from petmd.export import export_checkpoint
from petmd.exported import FORMAT_VERSION
from petmd.loading import load_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bridge")
    ckpt = write_checkpoint(folder / "m.ckpt", small_pet(seed=21))
    paths = {}
    for dtype in ("float64", "float32"):
        paths[dtype] = folder / f"m-{dtype}.pt"
        export_checkpoint(ckpt, paths[dtype], dtype=dtype)
    return paths


SYSTEMS = {
    "triclinic box": lambda: water_box(2, seed=4, cell_tilt=0.7),
    "molecule": lambda: Atoms("OHH", positions=[[0, 0, 0], [0.96, 0.1, 0], [-0.24, 0.93, 0.05]]),
    "lone atom": lambda: Atoms("O", positions=[[0, 0, 0]]),
}


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
@pytest.mark.parametrize("name", SYSTEMS)
def test_bridge_equals_python_model(exported, dtype, tol, name):
    atoms = SYSTEMS[name]()
    f = frame(atoms)
    bridge = _bridge.Model(str(exported[dtype]))
    assert bridge.metadata["dtype"] == dtype and bridge.device == "cpu"
    mask = np.ones(f.n_atoms, dtype=bool)
    mask[0] = False  # a node outside the energy sum, as LAMMPS's ghosts are
    out = bridge.compute(f.positions, f.numbers, f.cell, f.edge_index, f.cell_shifts, mask)
    ref = load_model(exported[dtype]).module(
        torch.from_numpy(f.positions),
        torch.from_numpy(f.numbers),
        torch.from_numpy(f.cell),
        torch.from_numpy(f.edge_index),
        torch.from_numpy(f.cell_shifts),
        torch.from_numpy(mask),
    )
    for key in ("energy", "energies", "forces", "virial"):
        want = ref[key].detach().numpy()
        scale = max(float(np.abs(want).max()), 1e-12)
        assert np.abs(out[key] - want).max() <= tol * scale, key


def test_bridge_errors(tmp_path, exported):
    with pytest.raises(_bridge.BridgeError, match="does not exist"):
        _bridge.Model(str(tmp_path / "missing.pt"))
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(_bridge.BridgeError, match="not a TorchScript model file"):
        _bridge.Model(str(tmp_path / "notes.txt"))
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    with pytest.raises(_bridge.BridgeError, match="not a petmd model"):
        _bridge.Model(str(plain))
    future = with_metadata(exported["float64"], tmp_path / "future.pt", format_version=FORMAT_VERSION + 1)
    with pytest.raises(_bridge.BridgeError, match=f"format version {FORMAT_VERSION + 1}, newer than this plugin reads"):
        _bridge.Model(str(future))
    with pytest.raises(
        _bridge.BridgeError, match=r"format version 1, which this petmd no longer runs .* `petmd export"
    ):
        _bridge.Model(str(FORMAT_1_MODEL))
    with pytest.raises(_bridge.BridgeError, match="unknown device 'gpu'"):
        _bridge.Model(str(exported["float64"]), "gpu")
    if not torch.cuda.is_available():
        with pytest.raises(_bridge.BridgeError, match="sees no CUDA device"):
            _bridge.Model(str(exported["float64"]), "cuda:0")
    else:
        with pytest.raises(_bridge.BridgeError, match="does not exist"):
            _bridge.Model(str(exported["float64"]), f"cuda:{torch.cuda.device_count()}")
    bridge = _bridge.Model(str(exported["float64"]))
    f = frame(water_box(1))
    with pytest.raises(_bridge.BridgeError, match="not species of this model"):
        bridge.compute(f.positions, np.full(f.n_atoms, 6), f.cell, f.edge_index, f.cell_shifts)
    with pytest.raises(ValueError, match="positions must have shape"):
        bridge.compute(f.positions[:, :2], f.numbers, f.cell, f.edge_index, f.cell_shifts)


# --- domain graphs: what pair_style pet builds from LAMMPS's local and ghost atoms --------------------------------


def domain(atoms: Atoms, local: np.ndarray, shell: float, skin: float = 0.5, tag_offset: int = 100):
    """One MPI domain as LAMMPS would hold it: its local atoms, then every periodic image (of any atom) within
    `shell` of a local atom as ghosts, in a scrambled order, with full neighbour lists (cutoff + skin) for all."""
    cell, pos, n = atoms.cell.array, atoms.positions, len(atoms)
    reach = int(np.ceil(shell / min(np.linalg.norm(cell, axis=1)))) + 1
    ranges = [range(-reach, reach + 1) if p else range(1) for p in atoms.pbc]
    images = [(a, np.array(s)) for s in np.ndindex(*[len(r) for r in ranges]) for a in range(n)]
    local_pos = pos[local]
    tree = cKDTree(local_pos) if len(local_pos) else None
    ghosts = []
    for a, idx in images:
        s = np.array([ranges[k][idx[k]] for k in range(3)])
        if not s.any() and a in local:
            continue
        r = pos[a] + s @ cell
        if tree is not None and tree.query(r)[0] < shell:
            ghosts.append((a, r))
    rng = np.random.default_rng(len(ghosts))
    ghosts = [ghosts[k] for k in rng.permutation(len(ghosts))]
    atom_of = np.concatenate([local, [a for a, _ in ghosts]]).astype(int)
    x = np.concatenate([local_pos.reshape(-1, 3), np.array([r for _, r in ghosts]).reshape(-1, 3)])
    pairs = cKDTree(x).query_pairs(CUTOFF + skin, output_type="ndarray")
    pairs = np.concatenate([pairs, pairs[:, ::-1]])
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    offsets = np.searchsorted(pairs[:, 0], np.arange(len(x) + 1)).astype(np.int64)
    tags = (atom_of * 3 + tag_offset).astype(np.int64)  # IDs that are not 1..N
    listed = np.arange(len(x), dtype=np.int32)
    return dict(
        x=x,
        tags=tags,
        nlocal=len(local),
        cell=cell,
        periodic=list(map(bool, atoms.pbc)),
        listed=listed,
        offsets=offsets,
        neighbors=pairs[:, 1].astype(np.int32),
    ), atom_of


def run_domains(bridge, atoms, parts, fold):
    """Sum of energy, forces (onto owners) and virial over the domains, as LAMMPS's ranks would."""
    n = len(atoms)
    energy, forces, virial, energies, nodes = 0.0, np.zeros((n, 3)), np.zeros((3, 3)), np.zeros(n), []
    for local in parts:
        args, atom_of = domain(atoms, np.asarray(local, dtype=int), bridge.interaction_range)
        g = _bridge.build_domain_graph(**args, cutoff=CUTOFF, fold=fold)
        nodes.append(len(g["node_atom"]))
        na = g["node_atom"]
        mask = np.arange(len(na)) < args["nlocal"]
        out = bridge.compute(
            args["x"][na], atoms.numbers[atom_of[na]], args["cell"], g["edge_index"], g["cell_shifts"], mask
        )
        energy += out["energy"]
        np.add.at(forces, atom_of[na], out["forces"])
        virial += out["virial"]
        energies[atom_of[na[mask]]] += out["energies"][mask]
    return energy, forces, virial, energies, nodes


@pytest.mark.parametrize("name", ["triclinic", "slab"])
def test_domain_graph_folding_and_splitting_change_nothing(exported, name):
    atoms = water_box(2, seed=9, cell_tilt=0.7 if name == "triclinic" else 0.0)
    if name == "slab":
        atoms.pbc = [True, True, False]
    bridge = _bridge.Model(str(exported["float64"]))
    ref = load_model(exported["float64"])(frame(atoms))
    want = {k: ref[k].detach().numpy() for k in ("energy", "forces", "virial", "energies")}
    frac_x = atoms.get_scaled_positions(wrap=True)[:, 0]
    splits = {
        "one domain": [np.arange(len(atoms))],
        "two domains": [np.flatnonzero(frac_x < 0.5), np.flatnonzero(frac_x >= 0.5)],
        "three, one empty": [np.flatnonzero(frac_x < 0.3), np.array([], dtype=int), np.flatnonzero(frac_x >= 0.3)],
    }
    for split, parts in splits.items():
        for fold in (True, False):
            energy, forces, virial, energies, nodes = run_domains(bridge, atoms, parts, fold)
            got = {"energy": energy, "forces": forces, "virial": virial, "energies": energies}
            for key, value in got.items():
                scale = float(np.abs(want[key]).max())
                assert np.abs(value - want[key]).max() <= 1e-10 * scale, (split, fold, key)
            if fold and split == "one domain":
                assert nodes == [len(atoms)]  # every image folded: one node per atom
            if not fold:
                assert nodes[0] > 5 * len(parts[0])  # the explicit ghost graph is much larger


def test_domain_graph_rejects_inconsistent_ids(exported):
    atoms = water_box(1)
    args, _ = domain(atoms, np.arange(len(atoms)), 8.0)
    args["tags"][1] = args["tags"][0]
    with pytest.raises(_bridge.BridgeError, match="held by two local atoms"):
        _bridge.build_domain_graph(**args, cutoff=CUTOFF)
    args, _ = domain(atoms, np.arange(len(atoms)), 8.0)
    args["x"][len(atoms)] += 0.3  # a ghost "image" off every lattice translation of its atom
    with pytest.raises(_bridge.BridgeError, match="not a periodic image"):
        _bridge.build_domain_graph(**args, cutoff=CUTOFF)


# --- message exchange: where each edge of a domain finds the token of its reverse edge -----------------------------


def test_exchange_reverse_index_finds_every_reverse_edge():
    """Two domains as LAMMPS would hold them for message exchange (ghosts within the cutoff and skin); each ghost's
    identity rows are its owner's, as the forward communication makes them. Every local edge i→j must find the row
    of the edge j→i: a local edge when this domain owns j, else the matching slot of a ghost image of j (ID of i,
    vector −x_ij)."""
    atoms = water_box(2, seed=9, cell_tilt=0.7)
    frac_x = atoms.get_scaled_positions(wrap=True)[:, 0]
    parts = [np.flatnonzero(frac_x < 0.5), np.flatnonzero(frac_x >= 0.5)]
    domains = [domain(atoms, part, CUTOFF + 1.0) for part in parts]
    probe = [_bridge.local_graph(**args, cutoff=CUTOFF, slots=256) for args, _ in domains]
    slots = max(g["max_neighbors"] for g in probe)
    local_rows = [_bridge.local_graph(**args, cutoff=CUTOFF, slots=slots)["identity_rows"] for args, _ in domains]
    owner = {int(a): (d, k) for d, part in enumerate(parts) for k, a in enumerate(part)}
    n_checked = 0
    for d, (args, atom_of) in enumerate(domains):
        nlocal = args["nlocal"]
        rows = local_rows[d].copy()
        for ghost in range(nlocal, len(atom_of)):
            home, k = owner[int(atom_of[ghost])]
            rows[ghost] = local_rows[home][k]
        g = _bridge.local_graph(**args, cutoff=CUTOFF, slots=slots, identity_rows=rows)
        edges, vectors, reverse = g["edge_index"], g["vectors"], g["reverse"]
        n_edges = edges.shape[1]
        for e in range(n_edges):
            i, j, r = edges[0, e], edges[1, e], reverse[e]
            assert r < n_edges + (len(atom_of) - nlocal) * slots, "an edge of this test lost its reverse"
            if r < n_edges:  # a local edge j→i, j a local atom or a periodic image of one
                assert atom_of[edges[0, r]] == atom_of[j] and atom_of[edges[1, r]] == atom_of[i]
                np.testing.assert_allclose(vectors[r], -vectors[e], atol=1e-9)
            else:  # slot s of ghost g, the image of atom j whose owner lists j→i there
                ghost, slot = divmod(r - n_edges, slots)
                ghost += nlocal
                assert atom_of[ghost] == atom_of[j]
                identity = rows[ghost, slot]
                assert identity[0] == args["tags"][i]
                np.testing.assert_allclose(identity[1:], -vectors[e], atol=1e-9)
            n_checked += 1
    assert n_checked > 20 * len(atoms)  # both domains, every edge
