"""Calibration metrics of a probe against correctness evidence: pure functions on arrays.

Every windowed metric comes with a 95% confidence interval (RESEARCH.md: AUROC on fewer than
~1,000 labels has a CI wider than ±0.035, too noisy to alert on alone). Bootstrap CIs share one
set of resample indices per window so they are cheap; AUROC also has the Hanley–McNeil interval.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

__all__ = [
    "auroc",
    "auroc_hanley_mcneil",
    "ece",
    "brier",
    "point_biserial",
    "agreement_rate",
    "wilson_interval",
    "window_metrics",
]

log = logging.getLogger(__name__)

_Z95 = 1.959963984540054


def _as_arrays(scores: ArrayLike, correct: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(correct, dtype=np.float64).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and correct differ in length: {s.size} != {y.size}")
    if s.size and (not np.all(np.isfinite(s)) or s.min() < 0.0 or s.max() > 1.0):
        raise ValueError("scores must be finite probabilities in [0, 1]")
    if y.size and not np.all((y == 0.0) | (y == 1.0)):
        raise ValueError("correct must be 0/1 (or bool)")
    return s, y


def _auroc_rows(s: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """AUROC of each row (Mann–Whitney with mid-ranks for ties); NaN where a row has one class."""
    s2 = np.atleast_2d(s)
    y2 = np.atleast_2d(y)
    ranks = stats.rankdata(s2, axis=1)
    n_pos = y2.sum(axis=1)
    n_neg = y2.shape[1] - n_pos
    rank_sum = (ranks * y2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    out[(n_pos == 0) | (n_neg == 0)] = np.nan
    return out


def auroc(scores: ArrayLike, correct: ArrayLike) -> float:
    """AUROC of the scores for predicting ``correct``; NaN when only one class is present."""
    s, y = _as_arrays(scores, correct)
    if s.size == 0:
        return math.nan
    return float(_auroc_rows(s, y)[0])


def auroc_hanley_mcneil(auc: float, n_pos: int, n_neg: int) -> tuple[float, float]:
    """95% CI of an AUROC by Hanley & McNeil (1982), clipped to [0, 1]."""
    if not math.isfinite(auc) or n_pos == 0 or n_neg == 0:
        return (math.nan, math.nan)
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    half = _Z95 * math.sqrt(max(var, 0.0))
    return (max(0.0, auc - half), min(1.0, auc + half))


def _ece_rows(s: NDArray[np.float64], y: NDArray[np.float64], bins: int, mass: bool) -> NDArray[np.float64]:
    """Expected calibration error per row: sum over bins of |mean(y) - mean(s)| * share of the bin."""
    s2 = np.atleast_2d(s)
    y2 = np.atleast_2d(y)
    n = s2.shape[1]
    if mass:
        # equal-mass (adaptive) bins: sort each row and cut into `bins` groups of ~equal count
        order = np.argsort(s2, axis=1, kind="stable")
        s2 = np.take_along_axis(s2, order, axis=1)
        y2 = np.take_along_axis(y2, order, axis=1)
        idx = np.minimum((np.arange(n) * bins) // max(n, 1), bins - 1)
        idx = np.broadcast_to(idx, s2.shape)
    else:
        idx = np.minimum((s2 * bins).astype(np.int64), bins - 1)
    rows = np.arange(s2.shape[0])[:, None]
    flat = (rows * bins + idx).ravel()
    size = s2.shape[0] * bins
    cnt = np.bincount(flat, minlength=size).reshape(-1, bins)
    ssum = np.bincount(flat, weights=s2.ravel(), minlength=size).reshape(-1, bins)
    ysum = np.bincount(flat, weights=y2.ravel(), minlength=size).reshape(-1, bins)
    return np.abs(ysum - ssum).sum(axis=1) / n


def ece(scores: ArrayLike, correct: ArrayLike, bins: int = 10, equal_mass: bool = False) -> float:
    """Expected calibration error with ``bins`` equal-width (default) or equal-mass bins."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    s, y = _as_arrays(scores, correct)
    if s.size == 0:
        return math.nan
    return float(_ece_rows(s, y, bins, equal_mass)[0])


def brier(scores: ArrayLike, correct: ArrayLike) -> float:
    """Mean squared difference between the score and the 0/1 outcome."""
    s, y = _as_arrays(scores, correct)
    return float(np.mean((s - y) ** 2)) if s.size else math.nan


def point_biserial(scores: ArrayLike, correct: ArrayLike) -> tuple[float, float, float]:
    """Point-biserial r between score and correctness, with a 95% CI (Fisher z)."""
    s, y = _as_arrays(scores, correct)
    n = s.size
    if n < 4 or np.all(y == y[0]) or np.all(s == s[0]):
        return (math.nan, math.nan, math.nan)
    r = float(np.corrcoef(s, y)[0, 1])
    r_c = min(max(r, -0.999999), 0.999999)
    z = math.atanh(r_c)
    half = _Z95 / math.sqrt(n - 3)
    return (r, math.tanh(z - half), math.tanh(z + half))


def agreement_rate(scores: ArrayLike, correct: ArrayLike, threshold: float = 0.5) -> float:
    """Share of samples where the probe verdict (score >= threshold) matches the evidence."""
    s, y = _as_arrays(scores, correct)
    return float(np.mean((s >= threshold) == (y == 1.0))) if s.size else math.nan


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + _Z95**2 / n
    centre = (p + _Z95**2 / (2 * n)) / den
    half = _Z95 * math.sqrt(p * (1 - p) / n + _Z95**2 / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def _ci(values: NDArray[np.float64]) -> list[float | None]:
    v = values[np.isfinite(values)]
    if v.size < 10:
        return [None, None]
    lo, hi = np.quantile(v, [0.025, 0.975])
    return [float(lo), float(hi)]


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def window_metrics(
    scores: ArrayLike,
    correct: ArrayLike,
    threshold: float = 0.5,
    bins: int = 10,
    bootstrap: int = 500,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """All calibration metrics of one window, each with a 95% CI; JSON-ready (None for undefined).

    ``est_accuracy`` is the label-free accuracy estimate: the mean of the (calibrated) probe scores,
    with a bootstrap band; compare it with ``accuracy`` (the evidence) to see calibration drift.
    """
    s, y = _as_arrays(scores, correct)
    n = int(s.size)
    n_pos = int(y.sum())
    out: dict[str, Any] = {"n": n, "n_pos": n_pos, "threshold": threshold, "bins": bins}
    if n == 0:
        return out
    rng = rng if rng is not None else np.random.default_rng(0)
    auc = _auroc_rows(s, y)[0]
    r, r_lo, r_hi = point_biserial(s, y)
    agree = (s >= threshold) == (y == 1.0)
    out.update(
        auroc=_num(auc),
        auroc_ci_hm=[_num(v) for v in auroc_hanley_mcneil(float(auc), n_pos, n - n_pos)],
        ece_width=_num(_ece_rows(s, y, bins, False)[0]),
        ece_mass=_num(_ece_rows(s, y, bins, True)[0]),
        brier=_num(float(np.mean((s - y) ** 2))),
        r_pb=_num(r),
        r_pb_ci=[_num(r_lo), _num(r_hi)],
        agreement=float(agree.mean()),
        agreement_ci=list(wilson_interval(int(agree.sum()), n)),
        accuracy=float(y.mean()),
        accuracy_ci=list(wilson_interval(n_pos, n)),
        mean_score=float(s.mean()),
        est_accuracy=float(s.mean()),
    )
    if bootstrap > 0 and n >= 2:
        idx = rng.integers(0, n, size=(bootstrap, n))
        bs, by = s[idx], y[idx]
        out["auroc_ci"] = _ci(_auroc_rows(bs, by))
        out["ece_width_ci"] = _ci(_ece_rows(bs, by, bins, False))
        out["ece_mass_ci"] = _ci(_ece_rows(bs, by, bins, True))
        out["brier_ci"] = _ci(((bs - by) ** 2).mean(axis=1))
        out["est_accuracy_ci"] = _ci(bs.mean(axis=1))
        out["bootstrap"] = bootstrap
    return out
