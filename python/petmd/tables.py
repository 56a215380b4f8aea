"""Plain-text tables: summaries with one row for all frames, then one per config_type/phase group; fixed-width
column tables with a unit line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union


def group_table(title: Sequence[str], columns: Sequence[str], row: Callable[[dict], str], result: dict) -> str:
    """``columns``: the header cells after "group" and "frames"; ``row(figures)`` formats the same cells."""
    head = f"{'group':<42} {'frames':>6} " + " ".join(columns)
    lines = [*title, head, "-" * len(head)]
    for name, figures in [("all", result), *result["by_group"].items()]:
        lines.append(f"{name:<42} {figures['n_frames']:>6} " + (row(figures) if figures["n_frames"] else ""))
    return "\n".join(lines)


@dataclass(frozen=True)
class Column:
    """One column of a fixed-width table: header and unit cells, the value's width and format spec (".3g", "d",
    "" for text), and where the value comes from (a key of the row, or a function of it)."""

    header: str
    unit: str
    width: int
    spec: str
    value: Union[str, Callable[[dict], object]]


def column_table(columns: Sequence[Column], rows: Sequence[dict]) -> str:
    """Header line, unit line, then one right-aligned line per row."""
    lines = [" ".join(f"{c.header:>{c.width}}" for c in columns), " ".join(f"{c.unit:>{c.width}}" for c in columns)]
    for row in rows:
        values = [c.value(row) if callable(c.value) else row[c.value] for c in columns]
        lines.append(" ".join(f"{v:>{c.width}{c.spec}}" for c, v in zip(columns, values)))
    return "\n".join(line.rstrip() for line in lines)
