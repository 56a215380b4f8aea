"""Streaming reader of LAMMPS text dumps (`dump custom`/`dump atom`): one frame in memory at a time, any box
(orthogonal, triclinic, changing under NPT), wrapped + image flags, unwrapped or scaled coordinates. Errors name the
file and line. ASE's reader loads the whole file and does not say where a malformed file breaks, hence this one."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path
from typing import Dict, Iterator, NoReturn, Optional, Sequence

import numpy as np

from ..errors import PetmdError
from .frames import TrajectoryFrame, lammps_cell

_POSITIONS = [("x", "y", "z"), ("xu", "yu", "zu"), ("xs", "ys", "zs"), ("xsu", "ysu", "zsu")]


def open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def is_lammps_dump(path: Path) -> bool:
    with open_text(path) as f:
        return f.readline().startswith("ITEM: TIMESTEP")


class _Lines:
    """Line reader that knows its line number, for error messages."""

    def __init__(self, f, path: Path):
        self.f, self.path, self.number = f, path, 0

    def next(self, what: str) -> str:
        line = self.f.readline()
        if not line:
            raise PetmdError(f"{self.path}:{self.number + 1}: file ends where {what} was expected (truncated dump?)")
        self.number += 1
        return line

    def expect(self, prefix: str) -> str:
        line = self.next(f"'{prefix}'")
        if not line.startswith(prefix):
            raise PetmdError(f"{self.path}:{self.number}: expected '{prefix}', found {line.strip()[:60]!r}")
        return line

    def error(self, message: str, line: Optional[int] = None) -> NoReturn:
        raise PetmdError(f"{self.path}:{line or self.number}: {message}")


def _number(lines: _Lines, text: str, kind=int):
    try:
        return kind(text.split()[0])
    except (ValueError, IndexError):
        lines.error(f"expected a number, found {text.strip()[:60]!r}")


def _parse_atoms(lines: _Lines, rows, columns: Sequence[str], first_line: int) -> np.ndarray:
    """The atom rows as a (N, ncol) float array; string columns (element) are parsed separately."""
    n, ncol = len(rows), len(columns)
    numeric = [k for k, c in enumerate(columns) if c != "element"]
    if len(numeric) == ncol:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                data = np.fromstring("".join(rows), sep=" ")  # text mode: C-speed, the hot path for large dumps
            except (DeprecationWarning, ValueError):
                data = None
        if data is not None and data.size == n * ncol:
            return data.reshape(n, ncol)
    table = np.full((n, ncol), np.nan)
    for k, row in enumerate(rows):
        tokens = row.split()
        if len(tokens) != ncol:
            lines.error(
                f"expected {ncol} values ({' '.join(columns)}), found {len(tokens)}: {row.strip()[:80]!r}",
                first_line + k,
            )
        try:
            table[k, numeric] = [float(tokens[c]) for c in numeric]
        except ValueError:
            lines.error(f"not a number in {row.strip()[:80]!r} (columns {' '.join(columns)})", first_line + k)
    return table


def read_lammps_dump(
    path, types: Optional[Sequence[str]] = None, timestep: Optional[float] = None
) -> Iterator[TrajectoryFrame]:
    """Frames of a LAMMPS text dump, atoms sorted by id. LAMMPS type k is element ``types[k-1]`` unless the dump has
    an ``element`` column; time = step × ``timestep`` (ps) when a timestep is given."""
    path = Path(path)
    if not path.exists():
        raise PetmdError(f"dump file {path} does not exist")
    with open_text(path) as f:
        lines = _Lines(f, path)
        while True:
            head = f.readline()
            if not head:
                return
            lines.number += 1
            if not head.strip():
                continue
            if not head.startswith("ITEM: TIMESTEP"):
                lines.error(f"expected 'ITEM: TIMESTEP', found {head.strip()[:60]!r}")
            header_line = lines.number
            step = _number(lines, lines.next("the timestep"))
            lines.expect("ITEM: NUMBER OF ATOMS")
            n_atoms = _number(lines, lines.next("the number of atoms"))
            box = lines.expect("ITEM: BOX BOUNDS").split()[3:]
            triclinic = box[:3] == ["xy", "xz", "yz"]
            if box and box[0] == "abc":
                lines.error(
                    "general triclinic boxes ('BOX BOUNDS abc origin') are not supported; write the dump "
                    "with LAMMPS's restricted triclinic box (the default)"
                )
            flags = box[3:] if triclinic else box
            pbc = np.array([flag == "pp" for flag in flags] if len(flags) == 3 else [True] * 3)
            bounds = np.zeros((3, 2))
            tilts = np.zeros(3)  # stays zero in an orthogonal box
            for d in range(3):
                values = lines.next("box bounds").split()
                try:
                    if len(values) != (3 if triclinic else 2):
                        raise ValueError
                    bounds[d] = [float(v) for v in values[:2]]
                    if triclinic:
                        tilts[d] = float(values[2])
                except (ValueError, IndexError):
                    lines.error(f"malformed box bounds line {' '.join(values)!r}")
            origin, cell = lammps_cell(bounds, tilts)
            columns = lines.expect("ITEM: ATOMS").split()[2:]
            first = lines.number + 1
            rows = [f.readline() for _ in range(n_atoms)]
            if n_atoms and not rows[-1]:
                got = sum(1 for r in rows if r)
                lines.error(
                    f"frame of step {step} (header at line {header_line}) is truncated: {n_atoms} atom lines "
                    f"expected, the file ends after {got}",
                    first + got,
                )
            lines.number += n_atoms
            yield _frame(
                lines, rows, columns, first, n_atoms, step, origin, cell, pbc, types, timestep, f"{path}:{header_line}"
            )


def _frame(
    lines: _Lines, rows, columns, first, n_atoms, step, origin, cell, pbc, types, timestep, source
) -> TrajectoryFrame:
    index: Dict[str, int] = {c: k for k, c in enumerate(columns)}
    table = _parse_atoms(lines, rows, columns, first)
    if "id" in index:
        order = np.argsort(table[:, index["id"]], kind="stable")
        table = table[order]
        rows = [rows[k] for k in order] if "element" in index else rows
    style = next((names for names in _POSITIONS if all(c in index for c in names)), None)
    if style is None:
        lines.error(
            f"no coordinates among the dump columns ({' '.join(columns)}): need x y z, xu yu zu, xs ys zs "
            f"or xsu ysu zsu",
            first - 1,
        )
    positions = table[:, [index[c] for c in style]]
    if style[0].startswith("xs"):
        positions = origin + positions @ cell
    unwrapped = style[0] in ("xu", "xsu")
    if not unwrapped and all(c in index for c in ("ix", "iy", "iz")):
        positions = positions + table[:, [index["ix"], index["iy"], index["iz"]]] @ cell
        unwrapped = True
    if "element" in index:
        symbols = np.array([row.split()[index["element"]] for row in rows])
    elif "type" in index:
        lammps_types = table[:, index["type"]].astype(int)
        if types is None:
            lines.error(
                "the dump has LAMMPS types but no element column: give the element of each type in order "
                "(--types O H), or the run's log with its pair_coeff line",
                first - 1,
            )
        if lammps_types.min() < 1 or lammps_types.max() > len(types):
            lines.error(
                f"LAMMPS type {lammps_types.max()} has no element: --types gives {len(types)} ({' '.join(types)})",
                first - 1,
            )
        symbols = np.asarray(types)[lammps_types - 1]
    else:
        lines.error(f"the dump has neither a type nor an element column ({' '.join(columns)})", first - 1)
    velocities = (
        table[:, [index[c] for c in ("vx", "vy", "vz")]] if all(c in index for c in ("vx", "vy", "vz")) else None
    )
    forces = table[:, [index[c] for c in ("fx", "fy", "fz")]] if all(c in index for c in ("fx", "fy", "fz")) else None
    return TrajectoryFrame(
        source=source,
        step=step,
        time=step * timestep if timestep else None,
        symbols=symbols,
        positions=positions,
        unwrapped=unwrapped,
        cell=cell,
        pbc=pbc,
        velocities=velocities,
        forces=forces,
    )
