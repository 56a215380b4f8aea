"""Observables of independent replicas of one simulation (own starting configuration and velocities), combined into
one result that `petmd compare` reads like any run's.

Each value is the mean over the replicas. Its error is the larger of two estimates: the spread of the replicas
(standard error of their mean, the honest error of a slow observable that one trajectory samples once) and the
replicas' own block errors combined (which the spread of a few replicas can underestimate by chance). The result's
``n_blocks`` is the number of replicas, so that compare's Student-t weighs an error from few replicas as uncertain
as it is."""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..errors import PetmdError
from .compare import as_floats, conditions_differ

X_NAMES = ("r", "t")  # the abscissae of curves: equal in every replica (lags: cut to the shortest replica)
Y_NAMES = ("value", "g", "c", "msd", "F")  # the quantity of an entry whose error is "err"
SUMMED = ("pairs", "samples")  # counts behind an entry: the merged entry rests on all of them


def merge_replicas(results: Sequence[dict]) -> dict:
    """One observables result from those of ``results`` (`petmd observables` of each replica)."""
    if not results:
        raise PetmdError("no replicas to merge")
    if len(results) == 1:
        return dict(results[0], replicas=1)
    merged: dict = {}
    for key, first in results[0].items():
        if any(result.get(key) is None for result in results):
            continue  # an observable not every replica has is no mean over them
        entries = [result[key] for result in results]
        if key == "system":
            merged[key] = _merge_system(entries)
        elif key == "molecules":
            merged[key] = _merge_molecules(entries)
        elif key == "inputs":
            merged[key] = {"replicas": entries}
        elif key == "notes":
            merged[key] = list(dict.fromkeys(note for entry in entries for note in entry))
        elif isinstance(first, dict) and "err" in first:
            merged[key] = merge_entries(entries, key)
        else:
            merged[key] = first
    merged["replicas"] = len(results)
    return merged


def check_same_system(results: Sequence[dict], names: Sequence[str]) -> None:
    """Replicas are samples of one simulation: refuse runs of different temperature, density or composition."""
    problems = []
    for name, result in zip(names[1:], results[1:]):
        differ = conditions_differ(results[0], result)
        if differ:
            problems.append(f"{name}: {', '.join(differ)}")
    if problems:
        raise PetmdError(
            f"these are not replicas of one simulation ({'; '.join(problems)} against {names[0]}); merge only runs "
            "of the same system and conditions"
        )


def merge_entries(entries: List[dict], key: str = "entry") -> dict:
    """One {value or curve, "err", ...} entry from the same entry of each replica."""
    first = entries[0]
    if len(entries) == 1:
        return dict(first)
    windows = [entry.get("fit_ps") for entry in entries]
    if not all(_same_window(window, windows[0]) for window in windows):
        raise PetmdError(f"{key}: the replicas fitted it over different lag windows ({windows}); analyse them alike")
    length = _common_length(entries, key)
    merged = dict(first)
    y_name = next(name for name in Y_NAMES if name in first)
    errors_of = [(y_name, "err")] + [(k[:-4], k) for k in first if k.endswith("_err") and k[:-4] in first]
    for value_name, err_name in errors_of:
        values = _stack(entries, value_name, length)
        errors = _stack(entries, err_name, length)
        merged[value_name], merged[err_name] = _mean_and_error(values, errors)
    for x_name in X_NAMES:
        if x_name in first and length is not None:
            merged[x_name] = list(first[x_name])[:length]
    for name in SUMMED:
        if name in first:
            total = np.sum([as_floats(entry[name] if length is None else entry[name][:length]) for entry in entries], 0)
            merged[name] = total.tolist() if np.ndim(total) else float(total)
    if "closest" in first:
        merged["closest"] = min(float(entry["closest"]) for entry in entries if entry.get("closest") is not None)
    merged["n_blocks"] = len(entries)
    return merged


def _same_window(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.allclose(a, b))


def _common_length(entries: List[dict], key: str) -> Optional[int]:
    """The number of points every replica's curve has (None for scalars and maps); abscissae must agree there."""
    x_name = next((name for name in X_NAMES if name in entries[0]), None)
    if x_name is None:
        return None
    length = min(len(entry[x_name]) for entry in entries)
    x = np.asarray(entries[0][x_name][:length], float)
    for entry in entries[1:]:
        if not np.allclose(np.asarray(entry[x_name][:length], float), x, rtol=1e-6, atol=1e-9):
            raise PetmdError(f"{key}: the replicas' {x_name} points differ; analyse them with the same options")
    return length


def _stack(entries: List[dict], name: str, length: Optional[int]) -> np.ndarray:
    return np.array([as_floats(entry[name] if length is None else entry[name][:length]) for entry in entries])


def _mean_and_error(values: np.ndarray, errors: np.ndarray):
    """Mean over axis 0 and max(replica spread, combined block errors); floats for scalars, lists for arrays."""
    n = len(values)
    with np.errstate(invalid="ignore"):
        mean = values.mean(axis=0)
        spread = values.std(axis=0, ddof=1) / np.sqrt(n)
        within = np.sqrt(np.sum(errors**2, axis=0)) / n
    error = np.fmax(spread, within)
    if np.ndim(mean) == 0:
        return float(mean), float(error)
    return mean.tolist(), error.tolist()


def _merge_system(entries: List[dict]) -> dict:
    merged = dict(entries[0])
    for key in ("n_frames", "time_span_ps"):
        if all(entry.get(key) is not None for entry in entries):
            merged[key] = sum(entry[key] for entry in entries)
    return merged


def _merge_molecules(entries: List[dict]) -> dict:
    merged = dict(entries[0])
    for key in ("proton_hops", "not_whole_molecule_frames", "unassigned_H_frames"):
        merged[key] = sum(entry.get(key) or 0 for entry in entries)
    times = [float(entry["first_not_whole_ps"]) for entry in entries if entry.get("first_not_whole_ps") is not None]
    merged["first_not_whole_ps"] = min(times) if times else None  # time within its own replica
    return merged
