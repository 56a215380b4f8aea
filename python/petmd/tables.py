"""Plain-text summary tables: one row for all frames, then one per config_type/phase group."""

from __future__ import annotations

from typing import Callable, Sequence


def group_table(title: Sequence[str], columns: Sequence[str], row: Callable[[dict], str], result: dict) -> str:
    """``columns``: the header cells after "group" and "frames"; ``row(figures)`` formats the same cells."""
    head = f"{'group':<42} {'frames':>6} " + " ".join(columns)
    lines = [*title, head, "-" * len(head)]
    for name, figures in [("all", result), *result["by_group"].items()]:
        lines.append(f"{name:<42} {figures['n_frames']:>6} " + (row(figures) if figures["n_frames"] else ""))
    return "\n".join(lines)
