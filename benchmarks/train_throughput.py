#!/usr/bin/env python
"""Training and inference throughput of PET on single SCAN water frames (CPU, float32).

Training step = what `petmd train` times per batch (Trainer.train_step) with a batch of --batch-frames rotated copies
of one frame: collate with random rotations, the loss's parameter gradient (petmd.model.training_gradient: in chunks
of --train-chunks atoms with recomputation, or 0 = the plain double backward through forces with create_graph=True),
gradient clipping, AdamW step.
Inference step = collate + energy and forces (no create_graph, no virial, weights frozen). Neighbour lists are built
once beforehand and not timed (training precomputes them too). Each measurement: 1 warm-up step, then --repeats timed
steps; atoms/s = atoms per frame / step time.

    python benchmarks/train_throughput.py                        # study-size model, 192 and 864 atoms, all cores
    python benchmarks/train_throughput.py --model-size small --sizes 192 --repeats 1 --threads 1
    python benchmarks/train_throughput.py --sizes 864 --batch-frames 4 --train-chunks 128   # the issue's 4 x 864

Peak RSS is resource.getrusage's ru_maxrss after each measurement. On Linux, freed heap is returned to the OS
(malloc_trim) and the high-water mark is reset (write "5" to /proc/self/clear_refs) before each measurement, so it is
the peak of that measurement alone, including the torch runtime and the frames (the "RSS before any model" line,
~0.25 GiB); where that is not possible it is the process's peak so far. The data file is read in a child process, so
the parsed data set never counts.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone

import numpy as np
import torch

import petmd
from machine import available_cores, cpu_model  # noqa: E402  (benchmarks/machine.py)
from petmd.batch import collate, frame_from_atoms, random_rotations
from petmd.config import ModelConfig, TrainingConfig
from petmd.data import default_data_path, read_structures
from petmd.model import PET
from petmd.model.training_gradient import loss_and_gradient
from petmd.objective import training_loss

MODEL_SIZES = {
    "study": ModelConfig(),
    "small": replace(ModelConfig(), d_model=64, d_ff=256, n_heads=2),
}


def peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux (bytes on macOS)
    return kib / 1024.0 if sys.platform != "darwin" else kib / 2.0**20


def current_rss_mib():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def release_memory() -> None:
    """Drop garbage and hand freed heap back to the OS (glibc keeps it otherwise, and it would count towards the next
    measurement's RSS)."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark that ru_maxrss reports (Linux ≥ 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _pick_frames(path, sizes):
    structures = read_structures(path)
    picked = {}
    for index, atoms in enumerate(structures):
        n = len(atoms)
        if n in sizes and n not in picked:
            picked[n] = (index, atoms.copy(), float(atoms.get_potential_energy()), np.array(atoms.get_forces()))
    missing = sorted(n for n in sizes if n not in picked)
    if missing:
        counts = sorted({len(a) for a in structures})
        return f"no frame with {missing} atoms in {path} (frame sizes there: {counts})"
    return picked


def pick_frames(path, sizes):
    """{n_atoms: (file frame index, atoms, energy, forces)} for the first frame of each requested size, read in a
    child process so that the whole data set never occupies this process's memory."""
    methods = multiprocessing.get_all_start_methods()
    with multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(1) as pool:
        picked = pool.apply(_pick_frames, (str(path), sorted(sizes)))
    if isinstance(picked, str):
        raise SystemExit(picked)
    return picked


def time_steps(step, repeats: int):
    release_memory()
    reset_peak_rss()
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def training_step(
    model, optimizer, frame, batch_frames: int, chunk: int, sigma_f: float, tcfg: TrainingConfig, seed: int
):
    """One step of petmd.train.Trainer.train_step's work on `batch_frames` randomly rotated copies of one frame:
    collate, loss gradient in chunks of `chunk` atoms, clipping, the optimizer's step."""
    rng = np.random.default_rng(seed)

    def step():
        rotations = random_rotations(batch_frames, rng, inversion=tcfg.augment_inversion)
        batch = collate([frame] * batch_frames, rotations=rotations)
        optimizer.zero_grad(set_to_none=True)
        loss_and_gradient(
            model,
            batch.model_inputs(),
            lambda out: training_loss(out, batch, sigma_f, tcfg.energy_weight, tcfg.force_weight)[0],
            chunk,
        )
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()

    return step


def energy_forces_step(model, frame):
    """Energies and forces of one frame, no virial and no graph for a second derivative (as in MD)."""

    def step():
        out = model(**collate([frame]).model_inputs(), compute_forces=True, compute_virial=False, create_graph=False)
        out["forces"].sum().item()

    return step


def measure(model_cfg: ModelConfig, frame, repeats: int, train_chunks, batch_frames: int, seed: int = 0) -> dict:
    """Train-step timings (per training chunk size) and inference-step timings on one frame, each with a freshly
    built model."""
    results = {"train": {}}
    for chunk in train_chunks:
        results["train"][chunk] = measure_training(model_cfg, frame, repeats, chunk, batch_frames, seed)
    results["inference"] = measure_inference(model_cfg, frame, repeats, seed)
    return results


def measure_training(model_cfg: ModelConfig, frame, repeats: int, chunk: int, batch_frames: int, seed: int) -> dict:
    """Mirrors petmd.train.Trainer.train_step for a batch of `batch_frames` rotated copies of one frame."""
    tcfg = TrainingConfig()
    torch.manual_seed(seed)
    model = PET([1, 8], model_cfg).to(torch.float32)
    sigma_f = float(max(np.sqrt(np.mean(frame.forces**2)), 1e-6))
    with torch.no_grad():
        model.energy_scale.fill_(sigma_f)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.learning_rate, weight_decay=tcfg.weight_decay)
    train_step = training_step(model, optimizer, frame, batch_frames, chunk, sigma_f, tcfg, seed)
    model.train()
    times = time_steps(train_step, repeats)
    result = summarize(times, frame.n_atoms * batch_frames)
    del optimizer, train_step, model
    release_memory()
    return result


def measure_inference(model_cfg: ModelConfig, frame, repeats: int, seed: int) -> dict:
    """Energy + forces only, weights frozen (as in an exported model)."""
    torch.manual_seed(seed)
    model = PET([1, 8], model_cfg).to(torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    inference_step = energy_forces_step(model, frame)
    times = time_steps(inference_step, repeats)
    result = summarize(times, frame.n_atoms)
    del model, inference_step
    release_memory()
    return result


def summarize(times, n_atoms: int) -> dict:
    mean, best = float(np.mean(times)), float(np.min(times))
    return {
        "times_s": [round(t, 6) for t in times],
        "mean_s": mean,
        "best_s": best,
        "atoms_per_s_mean": n_atoms / mean,
        "atoms_per_s_best": n_atoms / best,
        "peak_rss_mib": peak_rss_mib(),
    }


def machine_info(threads: int) -> dict:
    return {
        "cpu": cpu_model(),
        "cores_available": available_cores(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "torch_threads": threads,
        "petmd": petmd.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def table(report: dict) -> str:
    m, info = report["model"], report["machine"]
    lines = [
        f"PET throughput, {report['model_size']} model (d_model {m['d_model']}, {m['n_heads']} heads, "
        f"d_ff {m['d_ff']}, "
        f"{m['n_gnn_layers']} GNN x {m['n_transformer_layers']} transformer layers, cutoff {m['cutoff']} Å), "
        f"{report['n_parameters']:,} parameters, {report['dtype']}, CPU",
        f"{info['cpu']}; {info['cores_available']} cores available; torch {info['torch']}, "
        f"{info['torch_threads']} threads; load avg {info['load_average_1min']}; {info['date']}",
        f"1 warm-up + {report['repeats']} timed steps per row; training batch = {report['batch_frames']} rotated "
        f"copies of the frame; train chunk 0 = plain double backward; peak RSS: {report['peak_rss']}"
        + (
            ""
            if report["baseline_rss_mib"] is None
            else f" (RSS before any model: {report['baseline_rss_mib']:.0f} MiB)"
        ),
        "",
        f"{'atoms':>6} {'edges':>7} {'step':>16} {'mean s':>9} {'best s':>9} {'atoms/s':>9} {'best at/s':>9} "
        f"{'peak RSS':>9} {'MiB/atom':>8}",
    ]
    for row in report["results"]:
        steps = [(f"train chunk {c}", r, report["batch_frames"]) for c, r in row["train"].items()]
        for label, r, frames in steps + [("E+F", row["inference"], 1)]:
            lines.append(
                f"{row['atoms']:>6} {row['edges']:>7} {label:>16} {r['mean_s']:>9.3f} {r['best_s']:>9.3f} "
                f"{r['atoms_per_s_mean']:>9.1f} {r['atoms_per_s_best']:>9.1f} "
                f"{r['peak_rss_mib']:>6.0f} MiB {r['peak_rss_mib'] / (row['atoms'] * frames):>8.2f}"
            )
    lines.append("")
    lines.append(
        "frames: "
        + ", ".join(f"{row['atoms']} atoms = file frame {row['frame_index']}" for row in report["results"])
        + f" of {report['data']}"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after 1 warm-up step (default 3)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 864], help="frame sizes in atoms")
    parser.add_argument(
        "--model-size",
        choices=sorted(MODEL_SIZES),
        default="study",
        help="study: ModelConfig defaults; small: d_model 64, d_ff 256, 2 heads",
    )
    parser.add_argument(
        "--train-chunks",
        type=int,
        nargs="+",
        default=[0, 128],
        help="training-gradient chunk sizes in atoms, 0 = plain double backward (default 0 128)",
    )
    parser.add_argument(
        "--batch-frames", type=int, default=1, help="training batch = this many rotated copies of the frame (default 1)"
    )
    parser.add_argument("--data", default=None, help="extxyz file (default: the SCAN water set)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    args = parser.parse_args(argv)
    if args.batch_frames < 1 or min(args.train_chunks) < 0:
        parser.error("--batch-frames must be at least 1 and --train-chunks not negative")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    data = args.data or str(default_data_path())
    picked = pick_frames(data, set(args.sizes))  # before any torch work: the child is forked without torch threads
    threads = args.threads or available_cores()
    torch.set_num_threads(threads)

    model_cfg = MODEL_SIZES[args.model_size]
    frames = {}
    for n in args.sizes:
        index, atoms, energy, forces = picked[n]
        frames[n] = (index, frame_from_atoms(atoms, model_cfg.cutoff, energy=energy, forces=forces))
    del picked
    release_memory()
    per_phase_rss = reset_peak_rss()
    baseline_rss = current_rss_mib()

    n_parameters = sum(p.numel() for p in PET([1, 8], model_cfg).parameters())
    results = []
    for n in args.sizes:
        index, frame = frames[n]
        row = {"atoms": n, "edges": int(frame.edge_index.shape[1]), "frame_index": index}
        row.update(measure(model_cfg, frame, args.repeats, args.train_chunks, args.batch_frames))
        results.append(row)
    report = {
        "model_size": args.model_size,
        "model": asdict(model_cfg),
        "n_parameters": n_parameters,
        "dtype": "float32",
        "repeats": args.repeats,
        "batch_frames": args.batch_frames,
        "data": data,
        "machine": machine_info(threads),
        "peak_rss": "per measurement" if per_phase_rss else "process peak so far (cumulative)",
        "baseline_rss_mib": baseline_rss,
        "results": results,
    }
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
