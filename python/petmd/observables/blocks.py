"""Block averaging over a trajectory read once, in bounded memory.

Per-frame contributions are summed into contiguous chunks of frames; when there are more than ``max_chunks`` chunks,
neighbouring chunks are merged and the chunk length doubles, so memory stays bounded whatever the trajectory length
while the trajectory can still be cut into any number of near-equal contiguous blocks at the end."""

from __future__ import annotations

import warnings
from typing import List, Tuple

import numpy as np


class BlockSeries:
    """Sums of arrays of a fixed shape, keyed by frame index (any order, but indices only grow in practice)."""

    def __init__(self, shape, max_chunks: int = 1024):
        self.shape = tuple(np.atleast_1d(shape)) if shape != () else ()
        self.max_chunks = max_chunks
        self.chunk_frames = 1
        self.sums: List[np.ndarray] = []
        self.frames: List[int] = []  # frames seen per chunk (for balancing the blocks)
        self.n_frames = 0

    def _chunk(self, frame: int) -> int:
        while frame // self.chunk_frames >= self.max_chunks:
            self._merge()
        k = frame // self.chunk_frames
        while len(self.sums) <= k:
            self.sums.append(np.zeros(self.shape))
            self.frames.append(0)
        return k

    def _merge(self):
        if len(self.sums) % 2:
            self.sums.append(np.zeros(self.shape))
            self.frames.append(0)
        self.sums = [a + b for a, b in zip(self.sums[0::2], self.sums[1::2])]
        self.frames = [a + b for a, b in zip(self.frames[0::2], self.frames[1::2])]
        self.chunk_frames *= 2

    def new_frame(self, frame: int):
        """Count ``frame`` as seen (what the blocks are balanced on); call once per frame."""
        self.frames[self._chunk(frame)] += 1
        self.n_frames += 1

    def add(self, frame: int, value, where=None):
        """Add ``value`` to the sums of the chunk holding ``frame`` (at index ``where`` if given)."""
        k = self._chunk(frame)
        if where is None:
            self.sums[k] += value
        else:
            self.sums[k][where] += value

    def _assignment(self, n_blocks: int):
        n_blocks = max(1, min(n_blocks, self.n_frames))
        frames = np.asarray(self.frames, dtype=float)
        ends = np.cumsum(frames)
        # chunk k goes to the block its middle frame falls in
        return n_blocks, np.minimum((n_blocks * (ends - frames / 2) / ends[-1]).astype(int), n_blocks - 1)

    def blocks(self, n_blocks: int) -> np.ndarray:
        """Sums over ``n_blocks`` contiguous blocks of near-equal frame counts: shape (n_blocks, *shape)."""
        n_blocks, which = self._assignment(n_blocks)
        out = np.zeros((n_blocks,) + self.shape)
        np.add.at(out, which, np.asarray(self.sums).reshape((len(self.sums),) + self.shape))
        return out

    def block_frames(self, n_blocks: int) -> np.ndarray:
        """Frames in each of the blocks that ``blocks(n_blocks)`` returns."""
        n_blocks, which = self._assignment(n_blocks)
        return np.bincount(which, np.asarray(self.frames, float), minlength=n_blocks)


def ratio_estimate(numerator: np.ndarray, denominator: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Σ numerator / Σ denominator over blocks (axis 0), and its standard error from the spread of the block ratios
    (NaN with fewer than two blocks holding data)."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = numerator.sum(axis=0) / denominator.sum(axis=0)
        per_block = numerator / denominator
    n = np.sum(np.isfinite(per_block), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # points with data in one block only: NaN, said below
        err = (
            np.nanstd(np.where(np.isfinite(per_block), per_block, np.nan), axis=0, ddof=1) / np.sqrt(n)
            if per_block.shape[0] > 1
            else np.full_like(value, np.nan)
        )
    err = np.where(n > 1, err, np.nan)
    return value, err


def mean_estimate(values, n_blocks: int) -> Tuple[float, float, int]:
    """(mean, standard error from ``n_blocks`` contiguous block means, blocks used) of a time series."""
    values = np.asarray(values, dtype=float)
    n_blocks = max(1, min(n_blocks, len(values)))
    means = np.array([chunk.mean() for chunk in np.array_split(values, n_blocks)])
    err = means.std(ddof=1) / np.sqrt(n_blocks) if n_blocks > 1 else float("nan")
    return float(values.mean()), float(err), n_blocks


def slope_estimate(time, values, n_blocks: int) -> Tuple[float, float]:
    """Slope of a linear fit of ``values`` against ``time``, and its error from a least-squares fit through the
    ``n_blocks`` block means (block means are close to independent where single samples are not)."""
    time, values = np.asarray(time, float), np.asarray(values, float)
    if len(time) < 2:
        return float("nan"), float("nan")
    slope = float(np.polyfit(time, values, 1)[0])
    n_blocks = max(1, min(n_blocks, len(values)))
    if n_blocks < 3:
        return slope, float("nan")
    t = np.array([c.mean() for c in np.array_split(time, n_blocks)])
    y = np.array([c.mean() for c in np.array_split(values, n_blocks)])
    (b, a), cov = np.polyfit(t, y, 1, cov="unscaled")
    residual = y - (a + b * t)
    sigma2 = float(residual @ residual) / (n_blocks - 2)
    return slope, float(np.sqrt(cov[0, 0] * sigma2))
