"""Metrics of a correctness signal against correctness evidence: pure functions on arrays.

The one home of AUROC, ECE, Brier and point-biserial r for the whole project: the calibration
history, detectors and report use :func:`window_metrics`; ``probe train``/``probe compare`` use
:func:`signal_metrics` and :func:`paired_auroc_delta`.

Every windowed metric comes with a 95% confidence interval (RESEARCH.md: AUROC on fewer than
~1,000 labels has a CI wider than ±0.035, too noisy to alert on alone). Bootstrap CIs share one
set of resample indices per call so they are cheap (AUROC is computed from ranks, one row per
resample); AUROC also has the Hanley–McNeil interval.

AUROC and r_pb only rank or correlate the scores, so they accept any finite scores (probe logits,
attention sharpness); ECE, Brier and agreement need probabilities in [0, 1].

Weights: :func:`window_metrics` takes an optional weight per row, the inverse of its inclusion
probability for spot checks (``monitor.spotcheck.policy``), so a window estimates the metric of
every scored sample in it, not of the ones the policy oversampled near the decision boundary.
Weighted estimates are Hajek (ratio) estimates: weighted means, the weighted Mann-Whitney AUROC
(each positive-negative pair counts w_i * w_j), ECE with weighted bins (equal-mass bins hold
equal weight). Bootstrap CIs resample rows with their weights; the Wilson intervals of
agreement and accuracy use the effective sample size p(1-p)/Var of the linearised Hajek mean.
With unit weights every figure equals the unweighted one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
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
    "SignalMetrics",
    "signal_metrics",
    "paired_auroc_delta",
]

log = logging.getLogger(__name__)

_Z95 = 1.959963984540054


def _as_arrays(
    scores: ArrayLike, correct: ArrayLike, probabilities: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(correct, dtype=np.float64).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and correct differ in length: {s.size} != {y.size}")
    if s.size and not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    if probabilities and s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise ValueError("scores must be finite probabilities in [0, 1]")
    if y.size and not np.all((y == 0.0) | (y == 1.0)):
        raise ValueError("correct must be 0/1 (or bool)")
    return s, y


def _auroc_rows(
    s: NDArray[np.float64], y: NDArray[np.float64], w: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """AUROC of each row (Mann-Whitney, ties count half; pair i, j weighs w_i * w_j); NaN where a
    row has one class."""
    s2 = np.atleast_2d(s)
    y2 = np.atleast_2d(y)
    if w is None:
        ranks = stats.rankdata(s2, axis=1)
        n_pos = y2.sum(axis=1)
        n_neg = y2.shape[1] - n_pos
        rank_sum = (ranks * y2).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
        out[(n_pos == 0) | (n_neg == 0)] = np.nan
        return out
    w2 = np.broadcast_to(np.atleast_2d(w), s2.shape)
    order = np.argsort(s2, axis=1, kind="stable")
    v = np.take_along_axis(s2, order, axis=1)
    yy = np.take_along_axis(y2, order, axis=1)
    ww = np.take_along_axis(w2, order, axis=1)
    pos_w, neg_w = ww * yy, ww * (1.0 - yy)
    cum_neg = np.cumsum(neg_w, axis=1)
    n = v.shape[1]
    k = np.broadcast_to(np.arange(n), v.shape)
    first = np.ones(v.shape, dtype=bool)
    first[:, 1:] = v[:, 1:] != v[:, :-1]
    last = np.ones(v.shape, dtype=bool)
    last[:, :-1] = v[:, :-1] != v[:, 1:]
    start = np.maximum.accumulate(np.where(first, k, 0), axis=1)  # first index of each tie group
    end = np.flip(np.minimum.accumulate(np.flip(np.where(last, k, n - 1), axis=1), axis=1), axis=1)
    below = np.take_along_axis(cum_neg - neg_w, start, axis=1)  # negative weight strictly below
    tied = np.take_along_axis(cum_neg, end, axis=1) - below
    den = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (pos_w * (below + 0.5 * tied)).sum(axis=1) / den
    out[~(den > 0)] = np.nan
    return out


def auroc(scores: ArrayLike, correct: ArrayLike) -> float:
    """AUROC of the (any finite) scores for predicting ``correct``; NaN when only one class is present."""
    s, y = _as_arrays(scores, correct, probabilities=False)
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


def _ece_rows(
    s: NDArray[np.float64], y: NDArray[np.float64], bins: int, mass: bool, w: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """Expected calibration error per row: sum over bins of |mean(y) - mean(s)| * share of the bin
    (shares and means by weight when ``w`` is given; equal-mass bins then hold equal weight)."""
    s2 = np.atleast_2d(s)
    y2 = np.atleast_2d(y)
    w2 = np.ones(s2.shape) if w is None else np.broadcast_to(np.atleast_2d(w), s2.shape).astype(np.float64)
    n = s2.shape[1]
    if mass:
        # equal-mass (adaptive) bins: sort each row and cut into `bins` groups of ~equal weight
        order = np.argsort(s2, axis=1, kind="stable")
        s2 = np.take_along_axis(s2, order, axis=1)
        y2 = np.take_along_axis(y2, order, axis=1)
        w2 = np.take_along_axis(w2, order, axis=1)
        if w is None:
            idx = np.broadcast_to(np.minimum((np.arange(n) * bins) // max(n, 1), bins - 1), s2.shape)
        else:
            before = np.cumsum(w2, axis=1) - w2
            idx = np.minimum((before * bins / w2.sum(axis=1, keepdims=True)).astype(np.int64), bins - 1)
    else:
        idx = np.minimum((s2 * bins).astype(np.int64), bins - 1)
    rows = np.arange(s2.shape[0])[:, None]
    flat = (rows * bins + idx).ravel()
    size = s2.shape[0] * bins
    ssum = np.bincount(flat, weights=(w2 * s2).ravel(), minlength=size).reshape(-1, bins)
    ysum = np.bincount(flat, weights=(w2 * y2).ravel(), minlength=size).reshape(-1, bins)
    return np.abs(ysum - ssum).sum(axis=1) / w2.sum(axis=1)


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
    """Point-biserial r between (any finite) score and correctness, with a 95% CI (Fisher z)."""
    s, y = _as_arrays(scores, correct, probabilities=False)
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


def wilson_interval(k: float, n: float) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (``n`` may be an effective sample size)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + _Z95**2 / n
    centre = (p + _Z95**2 / (2 * n)) / den
    half = _Z95 * math.sqrt(max(p * (1 - p), 0.0) / n + _Z95**2 / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def _weighted_proportion(x: NDArray[np.float64], w: NDArray[np.float64]) -> tuple[float, list[float]]:
    """Hajek mean of 0/1 values ``x`` with weights ``w`` and its 95% Wilson interval at the effective
    sample size p(1-p)/Var (linearised variance sum w^2 (x-p)^2 / (sum w)^2; Kish's size when p is
    0 or 1). Unit weights: the plain proportion and its Wilson interval."""
    total = float(w.sum())
    p = float((w * x).sum() / total)
    var = float((w * w * (x - p) ** 2).sum()) / (total * total)
    n_eff = p * (1 - p) / var if var > 0 else total * total / float((w * w).sum())
    return p, list(wilson_interval(p * n_eff, n_eff))


def _pearson_rows(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pearson r of each row of ``x`` [B, N] with ``y`` [B, N]; NaN where a row is constant."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc**2).sum(axis=-1) * (yc**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(axis=-1) / den, np.nan)


def _percentile_ci(values: NDArray[np.float64]) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the finite values; NaN with fewer than 10 of them."""
    v = values[np.isfinite(values)]
    if v.size < 10:
        return (math.nan, math.nan)
    lo, hi = np.quantile(v, [0.025, 0.975])
    return (float(lo), float(hi))


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _ci(values: NDArray[np.float64]) -> list[float | None]:
    return [_num(v) for v in _percentile_ci(values)]


def window_metrics(scores: ArrayLike, correct: ArrayLike, threshold: float = 0.5, bins: int = 10, bootstrap: int = 500,
                   rng: np.random.Generator | None = None, weights: ArrayLike | None = None) -> dict[str, Any]:
    """All calibration metrics of one window, each with a 95% CI; JSON-ready (None for undefined).

    ``weights``: one positive weight per row (1 / inclusion probability for spot checks; see the
    module docstring); None = unit weights. ``n`` stays the number of rows, ``n_eff`` is Kish's
    effective sample size (sum w)^2 / sum w^2.

    ``est_accuracy`` is the label-free accuracy estimate: the mean of the (calibrated) probe scores,
    with a bootstrap band; compare it with ``accuracy`` (the evidence) to see calibration drift.
    """
    s, y = _as_arrays(scores, correct)
    w = _weights(weights, s.size)
    n = int(s.size)
    n_pos = int(y.sum())
    out: dict[str, Any] = {"n": n, "n_pos": n_pos, "threshold": threshold, "bins": bins}
    if n == 0:
        return out
    rng = rng if rng is not None else np.random.default_rng(0)
    wts = np.ones(n) if w is None else w
    total = float(wts.sum())
    auc = _auroc_rows(s, y, w)[0]
    r, r_lo, r_hi = point_biserial(s, y)
    agree = ((s >= threshold) == (y == 1.0)).astype(np.float64)
    agreement, agreement_ci = _weighted_proportion(agree, wts)
    accuracy, accuracy_ci = _weighted_proportion(y, wts)
    # Hanley-McNeil from the class counts each weighted class stands for (their effective sizes)
    hm_pos, hm_neg = (n_pos, n - n_pos) if w is None else (_kish(wts[y == 1.0]), _kish(wts[y == 0.0]))
    out.update(
        n_eff=total * total / float((wts * wts).sum()),
        weighted=w is not None,
        auroc=_num(auc),
        auroc_ci_hm=[_num(v) for v in auroc_hanley_mcneil(float(auc), hm_pos, hm_neg)],
        ece_width=_num(_ece_rows(s, y, bins, False, w)[0]),
        ece_mass=_num(_ece_rows(s, y, bins, True, w)[0]),
        brier=_num(float((wts * (s - y) ** 2).sum() / total)),
        r_pb=_num(r),
        r_pb_ci=[_num(r_lo), _num(r_hi)],
        agreement=agreement,
        agreement_ci=agreement_ci,
        accuracy=accuracy,
        accuracy_ci=accuracy_ci,
        mean_score=float((wts * s).sum() / total),
        est_accuracy=float((wts * s).sum() / total),
    )
    if bootstrap > 0 and n >= 2:
        idx = rng.integers(0, n, size=(bootstrap, n))
        bs, by, bw = s[idx], y[idx], wts[idx]
        bw_or_none = None if w is None else bw
        out["auroc_ci"] = _ci(_auroc_rows(bs, by, bw_or_none))
        out["ece_width_ci"] = _ci(_ece_rows(bs, by, bins, False, bw_or_none))
        out["ece_mass_ci"] = _ci(_ece_rows(bs, by, bins, True, bw_or_none))
        out["brier_ci"] = _ci((bw * (bs - by) ** 2).sum(axis=1) / bw.sum(axis=1))
        out["est_accuracy_ci"] = _ci((bw * bs).sum(axis=1) / bw.sum(axis=1))
        out["bootstrap"] = bootstrap
    return out


def _weights(weights: ArrayLike | None, n: int) -> NDArray[np.float64] | None:
    """Validated weights as an array, or None for unit weights."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size != n:
        raise ValueError(f"weights and scores differ in length: {w.size} != {n}")
    if w.size and not (np.all(np.isfinite(w)) and np.all(w > 0)):
        raise ValueError("weights must be finite and > 0 (1 / inclusion probability)")
    return w


def _kish(w: NDArray[np.float64]) -> float:
    return float(w.sum() ** 2 / (w * w).sum()) if w.size else 0.0


@dataclass(frozen=True)
class SignalMetrics:
    """One signal's metrics against correctness, with 95% percentile-bootstrap CIs."""

    n: int
    auroc: float
    auroc_ci: tuple[float, float]
    r_pb: float
    r_pb_ci: tuple[float, float]
    ece: float
    ece_equal_mass: float
    brier: float

    def as_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "auroc": self.auroc,
            "auroc_ci": list(self.auroc_ci),
            "r_pb": self.r_pb,
            "r_pb_ci": list(self.r_pb_ci),
            "ece": self.ece,
            "ece_equal_mass": self.ece_equal_mass,
            "brier": self.brier,
        }


def _both_classes(y: NDArray[np.float64]) -> None:
    if y.size == 0 or np.all(y == y[0]):
        raise ValueError("AUROC needs both correct and incorrect samples")


def signal_metrics(scores: ArrayLike, correct: ArrayLike, *, n_boot: int = 1000, bins: int = 10,
                   seed: int = 0) -> SignalMetrics:
    """AUROC and r_pb with percentile-bootstrap 95% CIs, ECE (both binnings) and Brier.

    ``scores`` may be any finite values (logits included); ECE and Brier treat them as
    probabilities of correctness, clipped to [0, 1] for those two only. Raises ValueError when
    ``correct`` holds only one class.
    """
    s, y = _as_arrays(scores, correct, probabilities=False)
    _both_classes(y)
    idx = np.random.default_rng(seed).integers(0, s.size, size=(n_boot, s.size))
    bs, by = s[idx], y[idx]
    p = np.clip(s, 0.0, 1.0)
    return SignalMetrics(
        n=int(s.size),
        auroc=float(_auroc_rows(s, y)[0]),
        auroc_ci=_percentile_ci(_auroc_rows(bs, by)),
        r_pb=point_biserial(s, y)[0],
        r_pb_ci=_percentile_ci(_pearson_rows(bs, by)),
        ece=ece(p, y, bins),
        ece_equal_mass=ece(p, y, bins, equal_mass=True),
        brier=brier(p, y),
    )


def paired_auroc_delta(
    a: ArrayLike, b: ArrayLike, correct: ArrayLike, *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """AUROC(a) - AUROC(b) on the same samples, with a paired-bootstrap 95% CI."""
    sa, y = _as_arrays(a, correct, probabilities=False)
    sb, _ = _as_arrays(b, correct, probabilities=False)
    _both_classes(y)
    idx = np.random.default_rng(seed).integers(0, y.size, size=(n_boot, y.size))
    deltas = _auroc_rows(sa[idx], y[idx]) - _auroc_rows(sb[idx], y[idx])
    return auroc(sa, y) - auroc(sb, y), _percentile_ci(deltas)
