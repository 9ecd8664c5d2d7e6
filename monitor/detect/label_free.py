"""Label-free thresholds, tuned by resampling the reference for the window size they are applied to.

A label-free alert compares the current level of the probe scores (or spot-check agreement) with
the reference. A fixed threshold cannot be right for every window size: a PSI of 0.2 fires on a
fifth of stationary 100-score windows and on none of 300 or more. So each threshold here is the
quantile, over resampled in-control windows of exactly that size, of the statistic it gates:

* :func:`mean_shift_threshold` — |window mean − reference mean| for a window of ``w`` values: each
  draw resamples a reference of the reference's size and a window of ``w`` from the reference, so
  the reference's own sampling error is in it;
* :func:`psi_threshold` — the population stability index (:func:`psi`, on the reference's decile
  bins) of a resampled ``w``-value window against the reference.

The false-alarm budget is the detectors' one (``target`` per ``horizon`` values): a check applied
to consecutive windows of ``w`` values runs ``horizon / w`` times per horizon, so its level is
``target · w / horizon`` (Bonferroni), never looser than ``target``. Resampling is seeded by the
reference and the window size, so a threshold is the same on every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["window_level", "mean_shift_threshold", "psi", "psi_threshold", "width_bucket"]

_EPS = 1e-4
BINS = 10
MAX_DRAWS = 20_000


def window_level(w: int, target: float, horizon: int) -> float:
    """Per-window false-alarm level of a check applied to consecutive ``w``-value windows."""
    return min(target, target * max(1, w) / max(1, horizon))


def width_bucket(w: int) -> int:
    """Window widths are tuned at powers of two (rounded down: a smaller width, a looser — safer — threshold)."""
    return 1 << max(4, int(math.floor(math.log2(max(16, w)))))


def _draws(level: float) -> int:
    return int(min(MAX_DRAWS, max(2000, math.ceil(20.0 / level))))


def _seed(values: NDArray, w: int) -> int:
    return (int(values.size) * 1_000_003 + int(w) * 7919 + int(round(float(values.sum()) * 1000))) % (2**32)


def _reference(reference: ArrayLike) -> tuple[float, ...]:
    """The reference values as a (hashable, cached-on) tuple; at least 30 of them."""
    v = np.asarray(reference, dtype=np.float64).ravel()
    if v.size < 30:
        raise ValueError(f"need at least 30 reference values, got {v.size}")
    return tuple(v.tolist())


def _in_control_quantile(v: NDArray, w: int, level: float, cells: int,
                         draw: Callable[[np.random.Generator, int], NDArray]) -> float:
    """The (1 − level) quantile of ``draw(rng, m)``, m simulated in-control windows' statistics at a
    time (``cells`` values each), seeded by the reference and the width so a threshold is stable."""
    rng = np.random.default_rng(_seed(v, w))
    b = _draws(level)
    out = np.empty(b)
    chunk = max(1, 4_000_000 // cells)
    for i in range(0, b, chunk):
        m = min(chunk, b - i)
        out[i:i + m] = draw(rng, m)
    return float(np.quantile(out, 1.0 - level))


@lru_cache(maxsize=256)
def _mean_threshold(values: tuple[float, ...], w: int, level: float) -> float:
    v = np.asarray(values)
    n = v.size

    def draw(rng: np.random.Generator, m: int) -> NDArray:
        ref = v.mean() + v.std() / math.sqrt(n) * rng.standard_normal(m)  # the reference mean's own error
        return np.abs(v[rng.integers(0, n, size=(m, w))].mean(axis=1) - ref)

    return _in_control_quantile(v, w, level, w, draw)


def mean_shift_threshold(reference: ArrayLike, w: int, *, target: float, horizon: int) -> float:
    """The |window mean − reference mean| an in-control ``w``-value window exceeds at the budget's level."""
    return _mean_threshold(_reference(reference), int(w), window_level(w, target, horizon))


def _edges(reference: NDArray) -> NDArray:
    return np.unique(np.quantile(reference, np.linspace(0, 1, BINS + 1)[1:-1]))


def _shares(values: NDArray, edges: NDArray) -> NDArray:
    """Bin shares along the last axis."""
    idx = np.searchsorted(edges, values, side="right")
    k = edges.size + 1
    if values.ndim == 1:
        return np.bincount(idx, minlength=k) / values.size
    rows = np.arange(values.shape[0])[:, None] * k
    return np.bincount((idx + rows).ravel(), minlength=k * values.shape[0]).reshape(values.shape[0], k) / values.shape[1]


def psi(reference: ArrayLike, current: ArrayLike) -> float:
    """Population stability index of ``current`` against ``reference`` on the reference's decile bins."""
    r = np.asarray(reference, dtype=np.float64).ravel()
    c = np.asarray(current, dtype=np.float64).ravel()
    if r.size < 2 or c.size < 2:
        raise ValueError(f"PSI needs at least 2 values on each side, got {r.size} and {c.size}")
    e = _edges(r)
    pr, pc = np.maximum(_shares(r, e), _EPS), np.maximum(_shares(c, e), _EPS)
    return float(np.sum((pc - pr) * np.log(pc / pr)))


@lru_cache(maxsize=256)
def _psi_threshold(values: tuple[float, ...], w: int, level: float) -> float:
    r = np.asarray(values)
    e = _edges(r)

    def draw(rng: np.random.Generator, m: int) -> NDArray:
        pr = np.maximum(_shares(r[rng.integers(0, r.size, size=(m, r.size))], e), _EPS)  # the reference's own error
        pc = np.maximum(_shares(r[rng.integers(0, r.size, size=(m, w))], e), _EPS)
        return np.sum((pc - pr) * np.log(pc / pr), axis=1)

    return _in_control_quantile(r, w, level, w + r.size, draw)


def psi_threshold(reference: ArrayLike, w: int, *, target: float, horizon: int) -> float:
    """The PSI an in-control ``w``-value window exceeds at the budget's level."""
    return _psi_threshold(_reference(reference), int(w), window_level(w, target, horizon))
