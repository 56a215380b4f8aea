#!/usr/bin/env python
"""Throughput and peak memory of `petmd observables` on liquid-water LAMMPS dumps.

Systems: the 192-atom SCAN liquid-water frame (petmd.helpers.structures.liquid_water) repeated to 1536 (2×2×2) and 24576
(4×4×8) atoms. Each trajectory frame is that structure with independent Gaussian jitter (σ 0.05 Å per coordinate:
molecules stay whole, every observable has work to do), written as a LAMMPS text dump `id type x y z ix iy iz`
(wrapped coordinates with image flags, %.5f like LAMMPS's default) with 10 steps between frames. For each size and
frame count, a fresh Python process times (a) reading the frames only and (b) `petmd.observables.analyze` with
default options (g(r) ×3, c_L/c_T, F(cos θ, φ), MSD/D, c_uu, density), and reports its own peak resident memory
(VmHWM). Two frame counts per size show whether memory grows with the trajectory length (it should not).

    python benchmarks/observables_throughput.py                      # 1536 × 200 and 24576 × 20/60 frames
    python benchmarks/observables_throughput.py --sizes 1536 --frames 50 --json obs.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from machine import finish, metadata  # noqa: E402  (benchmarks/machine.py)

REPEATS = {1536: (2, 2, 2), 12288: (4, 4, 4), 24576: (4, 4, 8), 98304: (8, 8, 8)}

CHILD = r"""
import json, resource, sys, time
from petmd.observables.analyze import Options, analyze
from petmd.observables.trajectory import classify, iter_frames
path, mode = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if mode == "read":
    n = sum(1 for _ in iter_frames(classify([path]), types=["O", "H"], timestep=0.0005))
else:
    result = analyze([path], Options(types=["O", "H"], timestep=0.0005, progress=False))
    n = result["system"]["n_frames"]
seconds = time.perf_counter() - start
try:  # this process image's own high-water mark: Linux keeps ru_maxrss across exec, so it can be the parent's
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"frames": n, "seconds": seconds, "peak_rss_mb": peak}))
"""


def write_dump(path: Path, n_atoms: int, n_frames: int, seed: int = 0) -> Path:
    from petmd.helpers.structures import liquid_water

    atoms = liquid_water(REPEATS[n_atoms])
    assert len(atoms) == n_atoms
    rng = np.random.default_rng(seed)
    length = np.diag(atoms.cell.array)
    types = np.where(np.array(atoms.get_chemical_symbols()) == "O", 1, 2)
    ids = np.arange(1, n_atoms + 1)
    with open(path, "w") as f:
        for k in range(n_frames):
            positions = atoms.positions + rng.normal(0.0, 0.05, atoms.positions.shape)
            image = np.floor(positions / length).astype(int)
            wrapped = positions - image * length
            f.write(f"ITEM: TIMESTEP\n{10 * k}\nITEM: NUMBER OF ATOMS\n{n_atoms}\nITEM: BOX BOUNDS pp pp pp\n")
            f.write("".join(f"0 {x:.10f}\n" for x in length))
            f.write("ITEM: ATOMS id type x y z ix iy iz\n")
            table = np.column_stack([ids, types, wrapped, image])
            np.savetxt(f, table, fmt="%d %d %.5f %.5f %.5f %d %d %d")
    return path


def measure(path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1536, 24576], choices=sorted(REPEATS))
    parser.add_argument(
        "--frames", type=int, nargs="+", help="frame counts per size (default: 100 200 for 1536, 20 60 for larger)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_atoms in args.sizes:
            counts = args.frames or ([100, 200] if n_atoms <= 1536 else [20, 60])
            for n_frames in counts:
                dump = write_dump(Path(tmp) / f"water-{n_atoms}-{n_frames}.dump", n_atoms, n_frames)
                read = measure(dump, "read")
                full = measure(dump, "analyze")
                row = {
                    "atoms": n_atoms,
                    "frames": n_frames,
                    "dump_mb": dump.stat().st_size / 2**20,
                    "read_frames_per_s": read["frames"] / read["seconds"],
                    "frames_per_s": full["frames"] / full["seconds"],
                    "atom_frames_per_s": n_atoms * full["frames"] / full["seconds"],
                    "peak_rss_mb": full["peak_rss_mb"],
                    "read_peak_rss_mb": read["peak_rss_mb"],
                }
                rows.append(row)
                print(
                    f"{n_atoms:6d} atoms × {n_frames:4d} frames ({row['dump_mb']:7.1f} MB): read "
                    f"{row['read_frames_per_s']:7.2f} frames/s; all observables {row['frames_per_s']:7.2f} "
                    f"frames/s ({row['atom_frames_per_s']:,.0f} atom-frames/s), peak RSS "
                    f"{row['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
                dump.unlink()
    meta = metadata("observables_throughput.py", argv)
    finish(meta, args.json, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
