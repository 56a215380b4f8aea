#!/usr/bin/env python
"""What subnormal floats cost trained PET models on CPU: train and E+F step times of checkpoints with the CPU's
flush-to-zero / denormals-are-zero mode off (the x86 default) and on (what the petmd commands that run models
and pair_style pet set).

A trained model's attention puts near-zero weight on some neighbours; the softmax of those logits underflows into
the subnormal range, and every multiply with a subnormal operand takes a slow microcode path (in the attention's bmm
above all). The cost grows as training sharpens the attention (why the training epochs of models/pet-water-small.yaml
slowed by a third from the second to the sixth); a freshly initialised model, what
train_throughput.py times, does not show it.

Each (checkpoint, mode) is timed in a fresh child process that sets the mode before torch starts its thread pool
(worker threads inherit the creating thread's floating-point control word; setting it later reaches only the main
thread). Train step = Trainer.train_step's work (collate with rotations, loss gradient in chunks, clipping, AdamW) on
--batch-frames rotated copies of one SCAN frame; E+F step = energies and forces with frozen weights.

    git show 7807379:models/pet-water-small.ckpt > runs/small-v1.ckpt     # a model before much training
    python benchmarks/denormals.py runs/small-v1.ckpt models/pet-water-small.ckpt models/pet-water.ckpt --threads 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from pathlib import Path

from machine import metadata  # noqa: E402  (benchmarks/machine.py)
from train_throughput import energy_forces_step, pick_frames, summarize, time_steps, training_step  # noqa: E402


def _child(
    checkpoint: str, flush: bool, threads: int, atoms, energy, forces, repeats: int, batch_frames: int, chunk: int
) -> dict:
    import torch

    torch.set_flush_denormal(flush)  # first: before any op creates the worker threads
    torch.set_num_threads(threads)
    from petmd.batch import frame_from_atoms
    from petmd.checkpoint import build_model, load_checkpoint
    from petmd.config import config_from_dict

    state = load_checkpoint(checkpoint)
    weights = state.get("training_model_state", state["model_state"])
    model = build_model(state["config"]["model"], state["atomic_numbers"], weights, "float32")
    frame = frame_from_atoms(atoms, model.cutoff, energy=energy, forces=forces)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)  # small steps: the weights stay the checkpoint's
    # the loss weights, clipping and augmentation the checkpoint was trained with (defaults for keys it predates)
    tcfg = config_from_dict(state["config"], checkpoint).training
    train_step = training_step(model, optimizer, frame, batch_frames, chunk, float(state["sigma_f"]), tcfg, seed=0)

    train = summarize(time_steps(train_step, repeats), frame.n_atoms * batch_frames)
    model.load_state_dict(weights)  # undo the train steps' small updates
    for p in model.parameters():
        p.requires_grad_(False)
    inference_step = energy_forces_step(model, frame)
    inference = summarize(time_steps(inference_step, repeats), frame.n_atoms)
    return {"train": train, "inference": inference}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="training or weights-only checkpoints (.ckpt)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after 1 warm-up step (default 3)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="off/on pairs per checkpoint, interleaved so that drift in the machine's speed shows (default 2)",
    )
    parser.add_argument("--size", type=int, default=192, help="frame size in atoms (default 192)")
    parser.add_argument(
        "--batch-frames",
        type=int,
        default=5,
        help="training batch = this many rotated copies (default 5, ~1000 atoms as in the shipped configs)",
    )
    parser.add_argument("--chunk", type=int, default=512, help="training-gradient chunk in atoms (default 512)")
    parser.add_argument("--data", default=None, help="extxyz file (default: the SCAN water set)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    for path in args.checkpoints:
        if not Path(path).is_file():
            parser.error(f"checkpoint {path} does not exist")
    from petmd.data import default_data_path

    data = args.data or str(default_data_path())
    index, atoms, energy, forces = pick_frames(data, {args.size})[args.size]
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for path in args.checkpoints:
        for rnd in range(args.rounds):
            for flush in (False, True):
                with ctx.Pool(1) as pool:
                    r = pool.apply(
                        _child,
                        (path, flush, args.threads, atoms, energy, forces, args.repeats, args.batch_frames, args.chunk),
                    )
                rows.append({"checkpoint": path, "round": rnd + 1, "flush_denormal": flush, **r})
                print(
                    f"  {path} round {rnd + 1} flush {'on ' if flush else 'off'}: train "
                    f"{r['train']['mean_s']:.3f} s, E+F {r['inference']['mean_s']:.3f} s",
                    file=sys.stderr,
                )
    meta = metadata("denormals.py", argv)
    report = {
        "meta": meta,
        "frame": f"{args.size} atoms, file frame {index} of {data}",
        "threads": args.threads,
        "batch_frames": args.batch_frames,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"subnormal floats on CPU: {report['frame']}; train batch {args.batch_frames} copies; "
        f"{args.threads} threads; 1 warm-up + {args.repeats} timed steps"
    )
    print(f"{'checkpoint':<44} {'flush':>5} {'train s':>8} {'atoms/s':>8} {'E+F s':>7} {'atoms/s':>8}")
    for row in rows:
        t, i = row["train"], row["inference"]
        print(
            f"{row['checkpoint'][-44:]:<44} {'on' if row['flush_denormal'] else 'off':>5} {t['mean_s']:>8.3f} "
            f"{t['atoms_per_s_mean']:>8.0f} {i['mean_s']:>7.3f} {i['atoms_per_s_mean']:>8.0f}"
        )
    print(f"{meta['date']}, {meta['cpu']}, {meta['cores']} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
