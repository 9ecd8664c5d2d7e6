"""Metrics for comparing correctness signals: AUROC, r_pb, ECE, Brier, with bootstrap CIs.

``monitor.calibration`` owns the windowed calibration metrics of the daemon; this module keeps
the vectorised bootstrap the probe sweep and ``probe compare`` need (thousands of resamples over
a few thousand samples, several signals, paired deltas), computing AUROC from ranks so that one
call handles every resample at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "auroc",
    "point_biserial",
    "brier",
    "ece",
    "SignalMetrics",
    "signal_metrics",
    "paired_auroc_delta",
]

log = logging.getLogger(__name__)


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return s, y


def _auroc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores`` [B, N] against ``labels`` [B, N] (ties count one half)."""
    ranks = rankdata(scores, axis=-1)
    n_pos = labels.sum(axis=-1)
    n_neg = labels.shape[-1] - n_pos
    rank_sum = (ranks * labels).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), out, np.nan)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for predicting ``labels`` (True = correct)."""
    s, y = _check(scores, labels)
    if y.all() or not y.any():
        raise ValueError("AUROC needs both correct and incorrect samples")
    return float(_auroc_rows(s[None, :], y[None, :])[0])


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc**2).sum(axis=-1) * (yc**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(axis=-1) / den, np.nan)


def point_biserial(scores: np.ndarray, labels: np.ndarray) -> float:
    """Point-biserial correlation r_pb: Pearson r between a score and a binary label."""
    s, y = _check(scores, labels)
    return float(_pearson_rows(s[None, :], y[None, :].astype(np.float64))[0])


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error of a probability of correctness against the 0/1 outcome."""
    p, y = _check(probs, labels)
    return float(np.mean((p - y) ** 2))


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10, equal_mass: bool = False) -> float:
    """Expected calibration error; equal-width bins on [0, 1] or equal-mass (adaptive) bins."""
    p, y = _check(probs, labels)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if equal_mass:
        order = np.argsort(p, kind="stable")
        groups = np.array_split(order, min(bins, len(p)))
    else:
        idx = np.clip((p * bins).astype(int), 0, bins - 1)
        groups = [np.flatnonzero(idx == b) for b in range(bins)]
    total = 0.0
    for g in groups:
        if len(g):
            total += len(g) * abs(p[g].mean() - y[g].mean())
    return float(total / len(p))


@dataclass(frozen=True)
class SignalMetrics:
    """One signal's metrics against correctness, with 95% bootstrap CIs."""

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


def _resample(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(n_boot, n))


def _ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if not len(v):
        return (float("nan"), float("nan"))
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(v, [a, 1.0 - a])
    return (float(lo), float(hi))


def signal_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    n_boot: int = 1000,
    bins: int = 10,
    seed: int = 0,
) -> SignalMetrics:
    """AUROC and r_pb with percentile-bootstrap 95% CIs, ECE (both binnings) and Brier.

    ECE and Brier treat ``scores`` as probabilities of correctness; scores outside [0, 1] are
    clipped for those two only.
    """
    s, y = _check(scores, labels)
    idx = _resample(len(s), n_boot, np.random.default_rng(seed))
    bs, by = s[idx], y[idx]
    p = np.clip(s, 0.0, 1.0)
    return SignalMetrics(
        n=len(s),
        auroc=auroc(s, y),
        auroc_ci=_ci(_auroc_rows(bs, by)),
        r_pb=point_biserial(s, y),
        r_pb_ci=_ci(_pearson_rows(bs, by.astype(np.float64))),
        ece=ece(p, y, bins),
        ece_equal_mass=ece(p, y, bins, equal_mass=True),
        brier=brier(p, y),
    )


def paired_auroc_delta(
    a: np.ndarray, b: np.ndarray, labels: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """AUROC(a) - AUROC(b) on the same samples, with a paired-bootstrap 95% CI."""
    sa, y = _check(a, labels)
    sb, _ = _check(b, labels)
    idx = _resample(len(y), n_boot, np.random.default_rng(seed))
    deltas = _auroc_rows(sa[idx], y[idx]) - _auroc_rows(sb[idx], y[idx])
    return auroc(sa, y) - auroc(sb, y), _ci(deltas)
