"""What machine a benchmark ran on (shared by the benchmark scripts, which run with this folder on sys.path)."""

from __future__ import annotations

import os

from petmd.cpu import cpu_model  # noqa: F401  (the benchmarks import it from here)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def metadata(script: str, argv) -> dict:
    """Date, CPU, cores and the command line of a benchmark run."""
    import sys
    from datetime import datetime, timezone

    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cores": available_cores(),
        "command": " ".join(["python", f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])]),
    }


def finish(meta: dict, json_path, extra: str = "", **report) -> None:
    """Write {"meta": meta, **report} to json_path (if given) and print the machine line that ends every run."""
    import json
    from pathlib import Path

    if json_path:
        Path(json_path).write_text(json.dumps({"meta": meta, **report}, indent=1, default=str))
    print(f"{meta['date']}, {meta['cpu']}, {meta['cores']} cores{extra}")


def add_rates(row: dict) -> dict:
    """Per-second and per-atom figures of a row with atoms, flops, best_s (one evaluation) and peak_mb."""
    row["atoms_per_s"] = row["atoms"] / row["best_s"]
    row["mflop_per_atom"] = row["flops"] / row["atoms"] / 1e6
    row["gflop_per_s"] = row["flops"] / row["best_s"] / 1e9
    row["peak_mb_per_atom"] = row["peak_mb"] / row["atoms"]
    return row
