#!/usr/bin/env python
"""FLOP efficiency and peak memory of an exported petmd model's energy + forces on liquid water.

Systems: the 192-atom SCAN liquid-water frame (petmd.helpers.structures.liquid_water) replicated to 192·k³ atoms, the
neighbour list built once (petmd.batch.frame_from_atoms) and not timed. Each (size, chunk) runs in a fresh Python
process, so its peak memory is its own (VmHWM on CPU, torch.cuda.max_memory_allocated on a GPU). In it:

1. one call under torch.utils.flop_counter.FlopCounterMode (which also serves as warm-up): the FLOPs the model
   executes (matrix products, padding included), divided by the atoms;
2. --warmup more calls, then --calls timed calls of the exported forward (forward + force backward, as LAMMPS calls
   it: in TorchScript's plain interpreter, cpp/model.cpp); the best time gives atom-steps/s.

The parent measures the machine's fp32 matrix-multiply peak the same way (square torch.mm, best of several, same
threads; TF32 if --tf32) and reports FLOP efficiency = FLOPs/atom × atom-steps/s ÷ that peak. With --tf32 each
child also reports how far TF32 moves the energy and forces from the same call in float32.

    python benchmarks/inference_efficiency.py                                   # 192, 1536, 12288 atoms
    python benchmarks/inference_efficiency.py --sizes 1536 --chunks 0 256 512 1024 2048
    python benchmarks/inference_efficiency.py --device cuda --tf32 --sizes 12288 98304 --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from machine import add_rates, available_cores, finish, metadata  # noqa: E402  (benchmarks/machine.py)

REPO = Path(__file__).resolve().parents[1]
REPLICAS = {192 * k**3: k for k in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16)}

CHILD = r"""
import json, sys, time
import torch
from torch.utils.flop_counter import FlopCounterMode
from petmd.batch import frame_from_atoms
from petmd.loading import load_model
from petmd.helpers.structures import liquid_water

model_path, k, chunk, threads, device, tf32, warmup, calls = sys.argv[1:9]
k, chunk, threads, warmup, calls = int(k), int(chunk), int(threads), int(warmup), int(calls)
torch.set_num_threads(threads)
torch.backends.cuda.matmul.allow_tf32 = tf32 == "1"
model = load_model(model_path)
if chunk >= 0:
    model.set_chunk_atoms(chunk)
module = model.module.to(device)
atoms = liquid_water((k, k, k))
f = frame_from_atoms(atoms, model.cutoff)
args = [torch.from_numpy(a).to(device) for a in (f.positions, f.numbers, f.cell, f.edge_index, f.cell_shifts)]
args.append(torch.ones(f.n_atoms, dtype=torch.bool, device=device))
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
torch._C._set_graph_executor_optimize(False)  # as the C++ bridge and petmd.loading.LoadedModel run it
deviation = {}
if tf32 == "1":  # the same call in float32 proper: how far TF32's 10-bit mantissa products move the results
    torch.backends.cuda.matmul.allow_tf32 = False
    exact = module(*args)
    torch.backends.cuda.matmul.allow_tf32 = True
    fast = module(*args)
    deviation = {"tf32_energy_mev_per_atom": 1e3 * abs(float(fast["energy"] - exact["energy"])) / f.n_atoms,
                 "tf32_force_max_mev_per_A": 1e3 * float((fast["forces"] - exact["forces"]).abs().max()),
                 "tf32_force_mae_mev_per_A": 1e3 * float((fast["forces"] - exact["forces"]).abs().mean())}
counter = FlopCounterMode(display=False)
with counter:
    module(*args)
for _ in range(warmup):
    module(*args)
times = []
for _ in range(calls):
    sync()
    start = time.perf_counter()
    out = module(*args)
    sync()
    times.append(time.perf_counter() - start)
if device.startswith("cuda"):
    peak = torch.cuda.max_memory_allocated() / 2**20
else:
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
counts = torch.bincount(torch.from_numpy(f.edge_index[0]), minlength=f.n_atoms)
print(json.dumps({"atoms": f.n_atoms, "edges": int(f.edge_index.shape[1]),
                  "mean_neighbors": float(counts.float().mean()), "max_neighbors": int(counts.max()),
                  "flops": counter.get_total_flops(), "best_s": min(times),
                  "mean_s": sum(times) / len(times), "peak_mb": peak, "energy": float(out["energy"]), **deviation}))
"""


def gemm_peak(device: str, threads: int, tf32: bool, n: int = 0, repeats: int = 10) -> float:
    """Best fp32 rate of a square matrix product, FLOP/s."""
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    n = n or (8192 if device.startswith("cuda") else 2048)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def measure(
    model: Path, atoms: int, chunk: int, threads: int, device: str, tf32: bool, warmup: int, calls: int
) -> dict:
    cmd = [
        sys.executable,
        "-c",
        CHILD,
        str(model),
        str(REPLICAS[atoms]),
        str(chunk),
        str(threads),
        device,
        "1" if tf32 else "0",
        str(warmup),
        str(calls),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        killed = out.returncode < 0 or "out of memory" in out.stderr.lower()
        return {"atoms": atoms, "chunk": chunk, "error": "out of memory" if killed else out.stderr.strip()[-500:]}
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["chunk"] = chunk
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "pet-water.pt")
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 1536, 12288], choices=sorted(REPLICAS))
    parser.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        default=[-1],
        help="chunk sizes to compare (atoms; 0 = never chunk; -1 = the model's default)",
    )
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matrix products (GPU)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    peak = gemm_peak(args.device, args.threads, args.tf32)
    print(
        f"{args.model.name}: {'TF32' if args.tf32 else 'fp32'} matrix-multiply peak {peak / 1e9:.1f} GFLOP/s "
        f"({args.device}, {args.threads} threads)",
        flush=True,
    )
    meta = {
        **metadata("inference_efficiency.py", argv),
        "torch": torch.__version__,
        "threads": args.threads,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(args.device),
        "gemm_peak_gflops": peak / 1e9,
        "tf32": args.tf32,
        "model": str(args.model),
    }
    rows = []
    for atoms in args.sizes:
        for chunk in args.chunks:
            row = measure(args.model, atoms, chunk, args.threads, args.device, args.tf32, args.warmup, args.calls)
            if "error" not in row:
                add_rates(row)["efficiency"] = row["flops"] / row["best_s"] / peak
            rows.append(row)
            if args.json:  # after each row: a run stopped by a time limit keeps what it measured
                Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
            label = "default" if chunk < 0 else chunk
            if "error" in row:
                print(f"{atoms:7d} atoms, chunk {label}: {row['error']}", flush=True)
                continue
            print(
                f"{atoms:7d} atoms, chunk {label}: {row['best_s']:.3f} s/step (mean {row['mean_s']:.3f}), "
                f"{row['atoms_per_s']:,.0f} atom-steps/s, {row['mflop_per_atom']:.0f} MFLOP/atom "
                f"(neighbours mean {row['mean_neighbors']:.1f}, max {row['max_neighbors']}), "
                f"{row['gflop_per_s']:.1f} GFLOP/s = {100 * row['efficiency']:.0f} % of peak, "
                f"peak memory {row['peak_mb']:,.0f} MB",
                flush=True,
            )
            if "tf32_force_max_mev_per_A" in row:
                print(
                    f"{'':7s} TF32 against float32: |ΔE| {row['tf32_energy_mev_per_atom']:.2e} meV/atom, |ΔF| max "
                    f"{row['tf32_force_max_mev_per_A']:.3g}, mean {row['tf32_force_mae_mev_per_A']:.3g} meV/Å",
                    flush=True,
                )
    finish(meta, args.json, f", torch {meta['torch']}", rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
