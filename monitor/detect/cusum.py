"""The CUSUM in vectorised form, for simulation: thousands of streams as numpy cumulative sums.

Uses the Lindley form S_t = X_t − min(0, min_{s<=t} X_s) of the CUSUM (X the running sum of
increments). :mod:`monitor.detect.tuning` tunes the Bernoulli CUSUM (disagreement bits, the
log-likelihood ratio for a rate change p0 -> p1, Reynolds & Stoumbos) and the two-sided residual
CUSUM with it; ``bench/detection.py`` compares them with the detectors the daemon runs (the GLR
bank of :mod:`monitor.detect.labelled`, ADWIN), which replaced them as the live detectors.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["bernoulli_increments", "cusum_max", "cusum_first_alarm"]


def bernoulli_increments(p0: float, p1: float) -> tuple[float, float]:
    """LLR increments (for a 1, for a 0) of the Bernoulli CUSUM testing rate p0 against p1 > p0."""
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")
    return math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))


def cusum_max(increments: NDArray[np.float64], carry: tuple[NDArray, NDArray, NDArray] | None = None):
    """Max CUSUM statistic per row of ``increments`` (M, T), continuing from ``carry``.

    Returns ``(max_s, carry)`` where carry = (running sum, running min, max so far) for the next chunk.
    """
    m = increments.shape[0]
    if carry is None:
        carry = (np.zeros(m), np.zeros(m), np.zeros(m))
    x0, min0, mx0 = carry
    c = x0[:, None] + np.cumsum(increments, axis=1)
    rm = np.minimum(min0[:, None], np.minimum.accumulate(c, axis=1))
    mx = np.maximum(mx0, (c - rm).max(axis=1))
    return mx, (c[:, -1], rm[:, -1], mx)


def cusum_first_alarm(increments: NDArray[np.float64], h: float) -> NDArray[np.int64]:
    """Index of the first sample whose CUSUM statistic exceeds ``h`` per row; -1 when none."""
    c = np.cumsum(increments, axis=1)
    s = c - np.minimum(0.0, np.minimum.accumulate(c, axis=1))
    alarm = s > h
    return np.where(alarm.any(axis=1), alarm.argmax(axis=1), -1)
