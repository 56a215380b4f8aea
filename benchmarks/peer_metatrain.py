#!/usr/bin/env python
"""Cost of the maintained peer, metatrain's default PET, on the liquid-water systems petmd is measured on.

Runs in metatrain's own environment, not petmd's (petmd is never imported; metatrain must not change petmd's pinned
packages), made once with the same torch:

    python -m venv ../mtt && ../mtt/bin/pip install torch==2.13.0 metatrain
    ../mtt/bin/python benchmarks/peer_metatrain.py                          # 192 and 1536 atoms, batch of 4 × 864
    ../mtt/bin/python benchmarks/peer_metatrain.py --sizes 192 864 1536 --threads 2 --json peer.json
    ../mtt/bin/python benchmarks/peer_metatrain.py --sizes 192 --calls 2 --threads 1 --train-batch 1   # smoke test

Model: metatrain.pet.PET built from metatrain's default hyperparameters (get_default_hypers("pet")), species H and O,
one energy target in eV with forces (position gradients), float32, seed 0, untrained (cost does not depend on the
weights). Its parameter count is reported with the hyperparameters.

Systems: as petmd.helpers.structures.liquid_water, the first 192-atom "multithermal" frame of the SCAN set (12.38 Å
cube, species, positions and cell only) replicated to 192·k³ atoms; 864 atoms is the first 864-atom frame of the file
(1bar-260K liquid). The parent reads these frames once from the data file and hands them to the children as small
extxyz files.

Inference (one fresh process per size, so that its peak memory is its own): the model is exported and saved to a
TorchScript file (AtomisticModel.save) and loaded back with metatomic.torch.load_atomistic_model, as MD engines run it
(--eager keeps the un-scripted module). The system comes from metatomic's systems_to_torch (float32) with the
neighbour list the model requests (metatrain's get_system_with_neighbor_lists: full list, 4.5 Å) attached once, not
timed. One call = metatrain's evaluate_model(is_training=False): energy, then forces by autograd with respect to the
positions (what `mtt eval` does). The first call runs under torch.utils.flop_counter.FlopCounterMode (FLOPs per atom
of one energy + forces evaluation; it doubles as warm-up), then --warmup more calls (TorchScript's profiling executor
needs two before it settles), then --calls timed calls; the best gives atom-evaluations/s. Peak memory = VmHWM of the
child (torch runtime, model, system and the evaluation together); under TorchScript it still creeps up over the first
calls, so it depends a little on --warmup and --calls.

Training (own process): B = --train-batch copies of the 864-atom frame with their reference energy and forces, read
with metatrain's get_dataset (as `mtt train` reads an extxyz file), collated by its CollateFn with the neighbour-list
transform (not timed). One optimizer step is the body of metatrain's PET Trainer loop: evaluate_model(is_training=True)
(forces with create_graph=True), per-atom averaging, scaler, default loss (MSE on energy and forces, weight 1 each),
backward, gradient clipping (grad_clip_norm 1.0), Adam at the default learning rate. Composition baseline and target
scales are not fitted (they change numbers, not cost). --train-steps steps are run; the first includes the one-time
costs (Adam state, allocator growth), the best is the steady-state step. Peak memory = VmHWM of the child; per atom it
is divided by B × 864. A child killed by the OOM killer (negative exit code) or failing to allocate is recorded as
"out of memory".
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from machine import add_rates, available_cores, finish, metadata  # noqa: E402  (benchmarks/machine.py)

REPO = Path(__file__).resolve().parents[1]
REPLICAS = {192: 1, 1536: 2, 5184: 3, 12288: 4}  # 192·k³ replicas of the multithermal frame
SIZES = sorted([*REPLICAS, 864])  # 864: the first 864-atom frame of the file
TRAIN_ATOMS = 864


def default_data_path() -> Path:
    env = os.environ.get("PETMD_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "water-scan" / "water-scan.extxyz.gz"


def extract_frames(path: Path) -> dict:
    """The text of the first 192-atom multithermal frame and of the first 864-atom frame, streamed from the file:
    parsing every frame with ASE would take minutes."""
    found = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        for header in fh:
            if not header.strip():
                continue
            n = int(header)
            comment = next(fh)
            wanted = (n == 192 and "config_type=multithermal" in comment) or n == TRAIN_ATOMS
            body = [next(fh) for _ in range(n)]
            if wanted and n not in found:
                found[n] = header + comment + "".join(body)
            if len(found) == 2:
                return found
    raise SystemExit(f"{path}: no 192-atom multithermal or no {TRAIN_ATOMS}-atom frame")


# ---------------------------------------------------------------------------------------------------------------
# children (run in a fresh process each: `python peer_metatrain.py --child '{json spec}'`)


def peak_mb(field: str = "VmHWM") -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024


def energy_target() -> dict:
    from metatrain.utils.data.target_info import get_energy_target_info

    return {
        "energy": get_energy_target_info("energy", {"quantity": "energy", "unit": "eV"}, add_position_gradients=True)
    }


def build_pet(targets=None):
    import torch
    from metatrain.pet import PET
    from metatrain.utils.architectures import get_default_hypers
    from metatrain.utils.data import DatasetInfo

    targets = targets or energy_target()
    torch.manual_seed(0)
    hypers = get_default_hypers("pet")
    model = PET(hypers["model"], DatasetInfo(length_unit="angstrom", atomic_types=[1, 8], targets=targets))
    return model, targets, hypers


def child_infer(spec: dict) -> dict:
    import ase
    import ase.io
    import torch
    from metatomic.torch import load_atomistic_model, systems_to_torch
    from metatrain.utils.evaluate_model import evaluate_model
    from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(spec["threads"])
    targets = energy_target()
    if spec["eager"]:
        model = build_pet()[0].export().requires_grad_(False)  # a saved model's weights do not require grad either
    else:
        model = load_atomistic_model(spec["model"])
    frame = ase.io.read(spec["frame"], format="extxyz")
    atoms = ase.Atoms(frame.get_chemical_symbols(), frame.positions, cell=frame.cell, pbc=True)
    atoms = atoms.repeat((spec["replicate"],) * 3)
    system = get_system_with_neighbor_lists(
        systems_to_torch(atoms, dtype=torch.float32), model.requested_neighbor_lists()
    )

    def call():
        return evaluate_model(model, [system], targets, is_training=False)

    counter = FlopCounterMode(display=False)
    with counter:
        call()
    for _ in range(spec["warmup"]):
        call()
    times = []
    for _ in range(spec["calls"]):
        start = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - start)
    block = out["energy"].block()
    forces = -block.gradient("positions").values
    centers = system.get_neighbor_list(model.requested_neighbor_lists()[0]).samples.column("first_atom")
    counts = torch.bincount(centers, minlength=len(atoms))
    return {
        "atoms": len(atoms),
        "edges": int(centers.numel()),
        "mean_neighbors": float(counts.float().mean()),
        "max_neighbors": int(counts.max()),
        "flops": counter.get_total_flops(),
        "best_s": min(times),
        "mean_s": sum(times) / len(times),
        "peak_mb": peak_mb(),
        "energy": float(block.values.sum()),
        "force_rms": float(forces.pow(2).mean().sqrt()),
    }


def child_train(spec: dict) -> dict:
    import torch
    from metatrain.utils.data import CollateFn, get_dataset, unpack_batch
    from metatrain.utils.evaluate_model import evaluate_model
    from metatrain.utils.loss import LossAggregator
    from metatrain.utils.neighbor_lists import get_requested_neighbor_lists, get_system_with_neighbor_lists_transform
    from metatrain.utils.omegaconf import expand_dataset_config
    from metatrain.utils.per_atom import average_by_num_atoms
    from metatrain.utils.transfer import batch_to
    from omegaconf import OmegaConf

    torch.set_num_threads(spec["threads"])
    options = expand_dataset_config(
        OmegaConf.create(
            {
                "systems": {"read_from": spec["frames"], "length_unit": "angstrom"},
                "targets": {"energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}}},
            }
        )
    )[0]
    dataset, target_info, _ = get_dataset(options)
    model, _, hypers = build_pet(target_info)
    train = hypers["training"]
    collate = CollateFn(
        target_keys=list(target_info),
        callables=[get_system_with_neighbor_lists_transform(get_requested_neighbor_lists(model))],
    )
    systems, targets, extra = unpack_batch(collate([dataset[i] for i in range(len(dataset))]))
    systems, targets, extra = batch_to(systems, targets, extra, dtype=torch.float32)
    n_atoms = sum(len(s) for s in systems)
    loss_fn = LossAggregator(targets=target_info, config={})  # empty config = metatrain's default (MSE, weight 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=train["learning_rate"])
    rss_before = peak_mb("VmRSS")

    def step() -> float:  # the body of metatrain.pet.Trainer's training loop
        optimizer.zero_grad()
        predictions = evaluate_model(model, systems, target_info, is_training=True)
        predictions = average_by_num_atoms(predictions, systems, train["per_structure_targets"])
        reference = average_by_num_atoms(targets, systems, train["per_structure_targets"])
        predictions = model.scaler.apply_scales(
            systems, predictions, remove=False, use_per_target_scales=False, use_per_property_scales=True
        )
        loss = loss_fn(predictions, reference, extra)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train["grad_clip_norm"])
        optimizer.step()
        return float(loss)

    times, losses = [], []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - start)
    return {
        "frames": len(systems),
        "atoms": n_atoms,
        "first_s": times[0],
        "best_s": min(times),
        "losses": losses,
        "rss_before_mb": rss_before,
        "peak_mb": peak_mb(),
        "loss": loss_fn.metadata,
    }


# ---------------------------------------------------------------------------------------------------------------
# parent


def run_child(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)], capture_output=True, text=True
    )
    if out.returncode != 0:
        err = out.stderr.lower()
        oom = out.returncode < 0 or "out of memory" in err or "can't allocate memory" in err
        return {"error": "out of memory" if oom else out.stderr.strip()[-800:], "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[192, 1536],
        choices=SIZES,
        help="inference system sizes in atoms (864 = the first 864-atom frame, others 192·k³)",
    )
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the FLOP-counting one")
    parser.add_argument("--calls", type=int, default=3, help="timed calls; the best is reported")
    parser.add_argument("--eager", action="store_true", help="run the exported module without TorchScript")
    parser.add_argument("--train-batch", type=int, default=4, help=f"frames of {TRAIN_ATOMS} atoms per training step")
    parser.add_argument("--train-steps", type=int, default=2, help="optimizer steps timed (first and best reported)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--data", type=Path, default=default_data_path(), help="SCAN water extxyz(.gz)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        spec = json.loads(args.child)
        row = child_infer(spec) if spec["task"] == "infer" else child_train(spec)
        print(json.dumps(row))
        return 0

    import torch

    pet, _, hypers = build_pet()
    n_params = sum(p.numel() for p in pet.parameters())
    h = hypers["model"]
    print(
        f"metatrain {version('metatrain')} PET, default hypers (cutoff {h['cutoff']} Å, d_pet {h['d_pet']}, "
        f"d_node {h['d_node']}, d_head {h['d_head']}, d_feedforward {h['d_feedforward']}, {h['num_heads']} heads, "
        f"{h['num_gnn_layers']} GNN × {h['num_attention_layers']} attention layers, {h['activation']}, "
        f"{h['featurizer_type']} featurizer): {n_params:,} parameters; {args.threads} threads, "
        f"{'eager' if args.eager else 'TorchScript'}",
        flush=True,
    )

    frames = extract_frames(args.data)
    rows, train_row = [], None
    with tempfile.TemporaryDirectory() as tmp:
        files = {n: Path(tmp) / f"water{n}.extxyz" for n in frames}
        for n, text in frames.items():
            files[n].write_text(text)
        model_file = Path(tmp) / "pet.pt"
        if not args.eager:
            pet.export().save(str(model_file))
        for atoms in args.sizes:
            frame, k = (files[TRAIN_ATOMS], 1) if atoms == TRAIN_ATOMS else (files[192], REPLICAS[atoms])
            row = {
                "atoms": atoms,
                **run_child(
                    {
                        "task": "infer",
                        "frame": str(frame),
                        "replicate": k,
                        "model": str(model_file),
                        "eager": args.eager,
                        "threads": args.threads,
                        "warmup": args.warmup,
                        "calls": args.calls,
                    }
                ),
            }
            rows.append(row)
            if "error" in row:
                print(f"{atoms:7d} atoms: {row['error']}", flush=True)
                continue
            add_rates(row)
            print(
                f"{atoms:7d} atoms: {row['best_s']:.3f} s/call (mean {row['mean_s']:.3f}), "
                f"{row['atoms_per_s']:,.0f} atom-evaluations/s, {row['mflop_per_atom']:.0f} MFLOP/atom "
                f"(neighbours mean {row['mean_neighbors']:.1f}, max {row['max_neighbors']}), "
                f"{row['gflop_per_s']:.1f} GFLOP/s, peak memory {row['peak_mb']:,.0f} MB",
                flush=True,
            )

        if not args.skip_train:
            train_file = Path(tmp) / "train.extxyz"
            train_file.write_text(frames[TRAIN_ATOMS] * args.train_batch)
            train_row = run_child(
                {"task": "train", "frames": str(train_file), "threads": args.threads, "steps": args.train_steps}
            )
            label = f"training step, {args.train_batch} × {TRAIN_ATOMS} atoms"
            if "error" in train_row:
                print(f"{label}: {train_row['error']}", flush=True)
            else:
                train_row["peak_mb_per_atom"] = train_row["peak_mb"] / train_row["atoms"]
                train_row["step_mb_per_atom"] = (train_row["peak_mb"] - train_row["rss_before_mb"]) / train_row["atoms"]
                train_row["atoms_per_s"] = train_row["atoms"] / train_row["best_s"]
                print(
                    f"{label}: {train_row['best_s']:.2f} s (first {train_row['first_s']:.2f} s), "
                    f"{train_row['atoms_per_s']:,.0f} atoms/s, peak memory {train_row['peak_mb']:,.0f} MB "
                    f"= {train_row['peak_mb_per_atom']:.3f} MB/atom (above the {train_row['rss_before_mb']:,.0f} "
                    f"MB before the first step: {train_row['step_mb_per_atom']:.3f} MB/atom)",
                    flush=True,
                )

    meta = {
        **metadata("peer_metatrain.py", argv),
        "python": sys.executable,
        "torch": torch.__version__,
        "metatrain": version("metatrain"),
        "metatomic_torch": version("metatomic-torch"),
        "metatensor_torch": version("metatensor-torch"),
        "threads": args.threads,
        "torchscript": not args.eager,
        "data": str(args.data),
    }
    model = {
        "architecture": "pet",
        "parameters": n_params,
        "hypers": hypers["model"],
        "training_hypers": {
            k: hypers["training"][k] for k in ("learning_rate", "grad_clip_norm", "loss", "weight_decay", "batch_size")
        },
    }
    finish(
        meta,
        args.json,
        f", torch {meta['torch']}, metatrain {meta['metatrain']}",
        model=model,
        inference=rows,
        training=train_row,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
