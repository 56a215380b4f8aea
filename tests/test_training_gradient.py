"""The memory-bounded training gradient (model/training_gradient.py) equals the plain double backward's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import frame, run_petmd, small_pet, water_box, write_config, write_labelled_data
from petmd.batch import collate, random_rotations
from petmd.checkpoint import load_checkpoint
from petmd.model.training_gradient import loss_and_gradient
from petmd.objective import rotational_variance, training_loss


def gradients(model, inputs, loss_fn, chunk, compute_virial=False):
    model.zero_grad(set_to_none=True)
    loss, out = loss_and_gradient(model, inputs, loss_fn, chunk, compute_virial)
    return (
        loss,
        out,
        {name: (torch.zeros_like(p) if p.grad is None else p.grad.clone()) for name, p in model.named_parameters()},
    )


def assert_same_gradients(got, ref, tol):
    for name, g in ref.items():
        scale = float(g.abs().max())
        err = float((got[name] - g).abs().max())
        assert err <= tol * max(scale, 1e-12), f"{name}: differs by {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_gradient_equals_double_backward(dtype):
    # two periodic structures (one triclinic) in a batch; a loss with energy, force and a nonlinear force term,
    # so both coefficients of the chunked path (∂L/∂E, ∂L/∂F) are exercised
    model = small_pet(seed=4, dtype=dtype, n_gnn_layers=3)
    batch = collate([frame(water_box(n_side=2, seed=1, cell_tilt=0.4)), frame(water_box(n_side=2, seed=9))])
    inputs = batch.model_inputs()
    n_atoms = batch.positions.shape[0]
    rng = np.random.default_rng(0)
    energy_ref = torch.from_numpy(rng.normal(size=2))
    forces_ref = torch.from_numpy(rng.normal(size=(n_atoms, 3)))

    def loss_fn(out):
        return (
            3.0 * ((out["energy"] - energy_ref) ** 2).mean()
            + ((out["forces"] - forces_ref) ** 2).mean()
            + (out["forces"][:5] ** 4).sum()
        )

    loss_ref, out_ref, ref = gradients(model, inputs, loss_fn, 0)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for chunk in (7, n_atoms - 1):
        loss, out, got = gradients(model, inputs, loss_fn, chunk)
        assert float(loss) == pytest.approx(float(loss_ref), rel=tol)
        torch.testing.assert_close(
            out["forces"], out_ref["forces"], rtol=0, atol=tol * float(out_ref["forces"].abs().max())
        )
        assert_same_gradients(got, ref, tol)


def test_chunked_gradient_of_the_training_loss_with_the_variance_penalty():
    # the trainer's own loss: energy and force terms plus the rotational-variance penalty over rotated copies
    model = small_pet(seed=2)
    f = frame(water_box(n_side=2, seed=3))
    copies = 3
    rotations = random_rotations(copies, np.random.default_rng(5))
    batch = collate([f] * copies, rotations=rotations)
    batch.energy = torch.tensor([-1500.0] * copies, dtype=torch.float64)
    batch.forces = torch.from_numpy(np.random.default_rng(1).normal(size=(batch.positions.shape[0], 3)))

    def loss_fn(out):
        loss, _, _ = training_loss(out, batch, 0.7, 1.0, 1.0)
        return loss + 100.0 * rotational_variance(out, batch, rotations, copies)

    _, _, ref = gradients(model, batch.model_inputs(), loss_fn, 0)
    _, _, got = gradients(model, batch.model_inputs(), loss_fn, 11)
    assert_same_gradients(got, ref, 1e-10)


def test_chunked_gradient_with_an_isolated_atom():
    # an atom without neighbours sorts first and can make a chunk without edges
    atoms = Atoms("OHHOH", positions=[[0, 0, 0], [0.96, 0.1, 0], [-0.24, 0.93, 0.05], [20, 20, 20], [2.0, 0.3, 0.2]])
    model = small_pet()
    inputs = collate([frame(atoms)]).model_inputs()

    def loss_fn(out):
        return (out["energy"] ** 2).sum() + (out["forces"] ** 2).sum()

    _, _, ref = gradients(model, inputs, loss_fn, 0)
    for chunk in (1, 2, 3):
        _, _, got = gradients(model, inputs, loss_fn, chunk)
        assert_same_gradients(got, ref, 1e-10)


def test_training_in_chunks_takes_the_same_steps(tmp_path):
    # a whole `petmd train` run: chunked gradients (chunks of 7 atoms, batches of 48) against the plain path
    data = write_labelled_data(tmp_path / "lj.extxyz", n_frames=6)
    states = {}
    for chunk in (0, 7):
        cfg = write_config(tmp_path / f"c{chunk}.yaml", data, epochs=1, chunk_atoms=chunk)
        run_petmd("train", cfg, "-o", tmp_path / f"c{chunk}", "--no-progress", check=True)
        states[chunk] = load_checkpoint(tmp_path / f"c{chunk}" / "last.ckpt")
    assert states[7]["global_step"] == states[0]["global_step"] > 0
    for key, value in states[0]["model_state"].items():
        torch.testing.assert_close(states[7]["model_state"][key], value, rtol=1e-8, atol=1e-10)


def test_chunk_setting_is_checked(tmp_path):
    data = write_labelled_data(tmp_path / "lj.extxyz", n_frames=4)
    cfg = write_config(tmp_path / "bad.yaml", data, chunk_atoms=-2)
    result = run_petmd("train", cfg, "-o", tmp_path / "bad")
    assert result.returncode == 2 and "training.chunk_atoms must be" in result.stderr, result.stderr
