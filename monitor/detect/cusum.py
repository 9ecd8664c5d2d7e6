"""Sequential CUSUM detectors with JSON-serialisable state, and their vectorised simulation.

* :class:`BernoulliCusum` watches the probe–evidence disagreement bits (probe verdict != evidence):
  the log-likelihood-ratio CUSUM for a rate change p0 -> p1 (Reynolds & Stoumbos).
* :class:`TwoSidedCusum` watches the calibration residual (evidence − probe score), standardised
  by the reference mean and standard deviation, in both directions.

The statistic is capped at ``cap_factor * h``: while a drift persists the alarm stays on, and once
the stream is back in control it falls below ``h`` within a bounded number of samples, which is
what lets an alert resolve. Thresholds ``h`` come from :mod:`monitor.detect.tuning`, never defaults.

The simulation helpers use the Lindley form S_t = X_t − min(0, min_{s<=t} X_s) of the CUSUM
(X the running sum of increments), so thousands of streams run as numpy cumulative sums.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BernoulliCusum",
    "TwoSidedCusum",
    "bernoulli_increments",
    "cusum_max",
    "cusum_first_alarm",
]

CAP_FACTOR = 2.0  # statistic cap as a multiple of h: bounds the time to clear after a drift ends


def bernoulli_increments(p0: float, p1: float) -> tuple[float, float]:
    """LLR increments (for a 1, for a 0) of the Bernoulli CUSUM testing rate p0 against p1 > p0."""
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")
    return math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))


@dataclass
class BernoulliCusum:
    """One-sided Bernoulli CUSUM on disagreement bits."""

    p0: float
    p1: float
    h: float
    s: float = 0.0
    n: int = 0  # bits consumed
    ones: int = 0  # disagreements consumed
    n_since_zero: int = 0  # bits since the statistic was last 0 (change-point estimate)
    ones_since_zero: int = 0
    alarms: int = 0  # upward crossings of h
    last_alarm_n: int | None = None
    cap_factor: float = CAP_FACTOR

    def update(self, x: bool) -> bool:
        """Consume one bit; return True when the statistic crosses ``h`` upwards on this bit."""
        a, b = bernoulli_increments(self.p0, self.p1)
        was_above = self.s > self.h
        self.s = min(max(0.0, self.s + (a if x else b)), self.cap_factor * self.h)
        self.n += 1
        self.ones += int(bool(x))
        if self.s == 0.0:
            self.n_since_zero = self.ones_since_zero = 0
        else:
            self.n_since_zero += 1
            self.ones_since_zero += int(bool(x))
        crossed = self.s > self.h and not was_above
        if crossed:
            self.alarms += 1
            self.last_alarm_n = self.n
        return crossed

    @property
    def firing(self) -> bool:
        return self.s > self.h

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BernoulliCusum:
        return cls(**state)


@dataclass
class TwoSidedCusum:
    """Two-sided CUSUM on a standardised stream: (x - mean) / sd, slack k, threshold h (sd units)."""

    mean: float
    sd: float
    k: float
    h: float
    hi: float = 0.0
    lo: float = 0.0
    n: int = 0
    total: float = 0.0  # running sum of raw values, for the mean since start
    alarms: int = 0
    last_alarm_n: int | None = None
    cap_factor: float = CAP_FACTOR
    recent: list[float] = field(default_factory=list)  # last few raw values (bounded)

    def update(self, x: float) -> bool:
        """Consume one value; True when either side crosses ``h`` upwards on it."""
        if self.sd <= 0:
            raise ValueError("TwoSidedCusum needs sd > 0")
        z = (x - self.mean) / self.sd
        was = self.firing
        cap = self.cap_factor * self.h
        self.hi = min(max(0.0, self.hi + z - self.k), cap)
        self.lo = min(max(0.0, self.lo - z - self.k), cap)
        self.n += 1
        self.total += x
        self.recent = (self.recent + [float(x)])[-200:]
        crossed = self.firing and not was
        if crossed:
            self.alarms += 1
            self.last_alarm_n = self.n
        return crossed

    @property
    def firing(self) -> bool:
        return self.hi > self.h or self.lo > self.h

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TwoSidedCusum:
        return cls(**state)


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
