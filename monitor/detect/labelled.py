"""The labelled detectors of one evidence source: a self-starting windowed GLR bank, tuned under
the reference's own uncertainty, two tests under one false-alarm budget.

Every :data:`GLR_STEP` labels, for each window w in :data:`GLR_WINDOWS` (the last w labels), the
window is compared with everything before it — the reference plus the monitored labels that
precede the window (self-starting: the in-control past sharpens the estimate the window is
compared with, so a 400-label reference is not the only yardstick for long):

* ``disagreement``: one-sided binomial GLR (log-likelihood ratio) that the window's
  probe–evidence disagreement rate is above the rate before it;
* ``residual``: two-sided Gaussian GLR, z²/2, on the mean calibration residual (evidence − score).

The statistic is the maximum over windows of the window's GLR less a penalty
λ·ln(w_max / w) (:data:`GLR_PENALTY`, per test): short windows catch large shifts within tens
of labels (0.10 → 0.25), long ones small shifts (0.10 → 0.127). Without the penalty one
threshold serves every window, so the many short windows (a 25-label window has 256 times as many
distinct placements in a horizon as a 6,400-label one, and the residual's short-window z² has
heavy tails) spend most of the false-alarm budget and the long windows, which small shifts need,
face their threshold. The penalty (a scan-statistic threshold that falls with ln w) moves budget
to the long windows: measured in ``bench/detection.py`` at a 1,000-label reference, the 0.10 →
0.127 median delay fell from 2,172 labels (6.0% missed) to 1,394 (0.2% missed)
while the 0.10 → 0.25 step went from 100 to 94 labels. Because both sides are estimates,
the statistic's null distribution barely depends on the reference size, and the thresholds are
set by simulation where the reference is itself a draw: each simulated stream's truth is a
bootstrap resample of the reference (an approximate posterior draw), its reference a fresh sample
of ``n_ref`` labels from that truth, and its labels come from the truth. The two thresholds share
one quantile level, chosen so that the share of ``horizon``-label streams on which *either* test
alarms is the target. In-control labels are exchangeable, so the order they arrive in (label
delay) does not change the false-alarm rate; the benchmark adds label delay to drifted streams.

Spot-check weights: every observation carries a weight, 1 for a label and 1 / inclusion
probability for a spot check (the selection policy oversamples uncertain scores). A window's and
its past's rates and means are weighted (Horvitz–Thompson ratio estimates of the population's, not
of the checked stream's), and each side counts as its Kish effective size (Σw)² / Σw², so the
statistic does not depend on the weights' scale and stays a population test when the budget or
the policy moves the design. The tuning simulation bootstraps (disagreement, residual, weight)
triples from the reference, so the thresholds carry the weights' extra variance. With unit
weights every statistic is the unweighted one.

State is plain JSON: the reference sums and the cumulative sums at the last checkpoints.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from monitor.calibration.metrics import wilson_interval
from monitor.detect.protocol import AlarmBookkeeping
from monitor.detect.tuning import CHUNK_CELLS, check_budget

__all__ = ["GLR_WINDOWS", "GLR_STEP", "GLR_PENALTY", "window_penalty", "RefSums", "GlrBank", "LabelledTuning", "tune_labelled",
           "bank_statistics", "first_alarms", "checkpoint_sums"]

log = logging.getLogger(__name__)

GLR_WINDOWS = (25, 50, 75, 100, 150, 200, 400, 800, 1600, 3200, 6400)  # labels per window (multiples of GLR_STEP)
GLR_STEP = 5  # the bank is evaluated every GLR_STEP labels, in the daemon and in the simulation alike
GLR_PENALTY = {"disagreement": 0.4, "residual": 1.1}  # λ per test: a window's GLR less λ·ln(max window / w)
TESTS = ("disagreement", "residual")


def _loglik(k: Any, n: Any) -> Any:
    """k log(k/n) + (n−k) log(1−k/n), with 0 log 0 = 0."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(k > 0, k * np.log(np.where(k > 0, k / n, 1.0)), 0.0)
        b = np.where(n - k > 0, (n - k) * np.log(np.where(n - k > 0, 1.0 - k / n, 1.0)), 0.0)
    return a + b


def _pair(b: NDArray, a: NDArray) -> tuple[Any, Any]:
    """(binomial, Gaussian) GLR statistics of a window's weighted sums ``b`` vs those before it ``a``.

    Both are (..., 5) arrays of (Σw·d, Σw·r, Σw·r², Σw, Σw²) (:data:`SUMS`); each side counts as its
    effective size (Σw)² / Σw² with its weighted rate and mean (with unit weights: the label counts).
    """
    wb, wa = b[..., 3], a[..., 3]
    nb, na = wb * wb / b[..., 4], wa * wa / a[..., 4]
    pb, pa = b[..., 0] / wb, a[..., 0] / wa
    kb, ka = pb * nb, pa * na
    llr = _loglik(kb, nb) + _loglik(ka, na) - _loglik(ka + kb, na + nb)
    binom = np.where(pb > pa, llr, 0.0)
    tot = wa + wb
    var = np.maximum((a[..., 2] + b[..., 2]) / tot - ((a[..., 1] + b[..., 1]) / tot) ** 2, 1e-12)
    gauss = (b[..., 1] / wb - a[..., 1] / wa) ** 2 / (var * (1.0 / nb + 1.0 / na)) / 2.0
    return binom, gauss


@dataclass(frozen=True)
class RefSums:
    """Weighted sufficient statistics of a reference: Σw·d, Σw, Σw·r, Σw·r², Σw² (:data:`SUMS` order
    is k, s, q, n, w2). With unit weights n = w2 = the label count; a reference stored before weights
    has no ``w2`` and was unweighted."""

    k: float
    n: float
    s: float
    q: float
    w2: float | None = None
    count: float | None = None  # observations (the label count; Σw with unit weights)

    def __post_init__(self) -> None:
        for name in ("w2", "count"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.n)

    @classmethod
    def of(cls, disagree: ArrayLike, residual: ArrayLike, weight: ArrayLike | None = None) -> RefSums:
        wd, wr, wrr, w, ww = _weighted_columns(disagree, residual, weight).reshape(-1, len(SUMS)).sum(axis=0)
        return cls(float(wd), float(w), float(wr), float(wrr), float(ww), float(np.size(residual)))

    def vector(self) -> NDArray[np.float64]:
        return np.array([self.k, self.s, self.q, self.n, self.w2])


SUMS = ("Σw·d", "Σw·r", "Σw·r²", "Σw", "Σw²")  # the columns of checkpoint sums and of ``_pair``'s inputs


def _weighted_columns(disagree: NDArray, residual: NDArray, weight: NDArray | None) -> NDArray[np.float64]:
    """Per-label (w·d, w·r, w·r², w, w²), shape (..., 5)."""
    r = np.asarray(residual, dtype=np.float64)
    w = np.ones_like(r) if weight is None else np.broadcast_to(np.asarray(weight, dtype=np.float64), r.shape)
    return np.stack([w * np.asarray(disagree, dtype=np.float64), w * r, w * r * r, w, w * w], axis=-1)


def checkpoint_sums(disagree: NDArray, residual: NDArray, weight: NDArray | None = None,
                    step: int = GLR_STEP) -> NDArray[np.float64]:
    """Cumulative weighted sums (:data:`SUMS`) at labels 0, step, 2·step, …: shape (M, J + 1, 5)."""
    return _checkpoints(_weighted_columns(disagree, residual, weight), step)


def _checkpoints(columns: NDArray[np.float64], step: int = GLR_STEP) -> NDArray[np.float64]:
    """:func:`checkpoint_sums` of per-label columns (M, T, 5) already weighted."""
    m, t, _ = columns.shape
    cols = np.arange(step - 1, t - (t % step), step)
    out = np.zeros((m, cols.size + 1, len(SUMS)))
    out[:, 1:, :] = np.cumsum(columns, axis=1)[:, cols, :]
    return out


def window_penalty(w: int, windows: Sequence[int], lam: float) -> float:
    """λ·ln(max window / w): what a window's GLR gives up so that long windows keep their share of the budget."""
    return lam * math.log(max(windows) / w)


def bank_statistics(cp: NDArray[np.float64], ref: RefSums | NDArray[np.float64], step: int = GLR_STEP,
                    windows: tuple[int, ...] = GLR_WINDOWS,
                    penalty: dict[str, float] = GLR_PENALTY) -> tuple[NDArray, NDArray]:
    """(disagreement, residual) penalised statistics (M, J) at every checkpoint of ``cp`` (M, J + 1, 5).

    ``ref`` is one reference for all rows, or an (M, 5) array of per-row reference sums (simulation).
    """
    m, j1, _ = cp.shape
    r0 = (ref.vector()[None, None, :] if isinstance(ref, RefSums) else np.asarray(ref)[:, None, :])
    gb = np.zeros((m, j1 - 1))
    gr = np.zeros((m, j1 - 1))
    for w in windows:
        back = w // step
        if back >= j1:
            continue
        cur, pre = cp[:, back:, :], cp[:, :j1 - back, :]
        b, g = _pair(cur - pre, r0 + pre)  # the window vs the reference and the monitored labels before it
        gb[:, back - 1:] = np.maximum(gb[:, back - 1:], b - window_penalty(w, windows, penalty["disagreement"]))
        gr[:, back - 1:] = np.maximum(gr[:, back - 1:], g - window_penalty(w, windows, penalty["residual"]))
    return gb, gr


@dataclass
class GlrBank(AlarmBookkeeping):
    """One test of the bank on a live stream (``update`` per label), its state plain JSON."""

    test: Literal["disagreement", "residual"]
    ref: dict[str, float]  # RefSums as a dict
    h: float
    step: int = GLR_STEP
    windows: list[int] = field(default_factory=lambda: list(GLR_WINDOWS))
    penalty: float = 0.0  # λ of this test (0: a state tuned before window penalties)
    checkpoints: list[list[float]] = field(default_factory=lambda: [[0.0] * len(SUMS)])  # the last max(w)/step + 1
    partial: list[float] = field(default_factory=lambda: [0.0] * len(SUMS))
    n: int = 0
    ones: int = 0  # disagreements consumed
    checkpoints_seen: int = 0  # checkpoints since the start (labels = step × this)
    stat: float = 0.0  # the statistic at the last checkpoint
    best_window: int | None = None
    window_value: float | None = None  # the driving window's (weighted) rate (disagreement) or mean residual
    window_effective_n: float | None = None  # its Kish effective size (the label count with unit weights)
    before_value: float | None = None  # the same before that window (reference + monitored past)
    alarms: int = 0
    last_alarm_n: int | None = None

    @staticmethod
    def state_is_current(state: dict[str, Any]) -> bool:
        """Whether a stored state has this version's weighted sums (older states restart)."""
        return len(state.get("partial", ())) == len(SUMS)

    def update(self, disagree: bool, residual: float, weight: float = 1.0) -> bool:
        """Consume one observation (weight 1 / inclusion probability); True when the statistic crosses ``h`` upwards."""
        row = _weighted_columns(float(bool(disagree)), float(residual), float(weight)).tolist()
        self.partial = [a + b for a, b in zip(self.partial, row)]
        self.n += 1
        self.ones += int(bool(disagree))
        if self.n % self.step:
            return False
        last = self.checkpoints[-1]
        self.checkpoints = (self.checkpoints + [[a + b for a, b in zip(last, self.partial)]])[
            -(max(self.windows) // self.step + 1):]
        self.partial = [0.0] * len(SUMS)
        self.checkpoints_seen += 1
        was = self.firing
        self._test()
        return self._record(was)

    def retract(self, old: tuple[bool, float], new: tuple[bool, float], weight: float = 1.0) -> bool:
        """Replace a consumed observation ``old`` (disagree, residual) by its correction ``new``.

        The stream keeps no per-label positions, so the difference enters the newest checkpoint
        (the correction is recent evidence: it counts in every window that ends now, and in the
        cumulative sums from here on); ``n`` is unchanged. The bank is tested again at once;
        True when the statistic crosses ``h`` upwards on the correction.
        """
        (d_old, r_old), (d_new, r_new) = old, new
        delta = (_weighted_columns(float(bool(d_new)), float(r_new), float(weight))
                 - _weighted_columns(float(bool(d_old)), float(r_old), float(weight))).tolist()
        self.ones += int(bool(d_new)) - int(bool(d_old))
        self.checkpoints[-1] = [a + b for a, b in zip(self.checkpoints[-1], delta)]
        was = self.firing
        self._test()
        return self._record(was)

    def _test(self) -> None:
        ref = RefSums(**self.ref).vector()
        cur = np.asarray(self.checkpoints[-1])
        best, arg, vals = 0.0, None, (None, None, None)
        col = 0 if self.test == "disagreement" else 1
        for w in self.windows:
            back = w // self.step
            if back > self.checkpoints_seen or back >= len(self.checkpoints):
                continue
            win, before = cur - np.asarray(self.checkpoints[-1 - back]), ref + np.asarray(self.checkpoints[-1 - back])
            b, g = _pair(win, before)
            v = float(b if self.test == "disagreement" else g) - window_penalty(w, self.windows, self.penalty)
            if v > best:
                best, arg = v, w
                vals = (float(win[col] / win[3]), float(win[3] ** 2 / win[4]), float(before[col] / before[3]))
        self.stat, self.best_window = best, arg
        self.window_value, self.window_effective_n, self.before_value = vals

    @property
    def firing(self) -> bool:
        return self.stat > self.h

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> GlrBank:
        """A fresh bank from a tuning's :meth:`LabelledTuning.params` (as stored in the database)."""
        return cls(test=p["test"], ref=dict(p["ref"]), h=float(p["h"]), step=int(p["step"]),
                   windows=list(p["windows"]), penalty=float(p.get("penalty", 0.0)))

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GlrBank:
        return cls(**state)

    @property
    def reference_value(self) -> float:
        """The reference's (weighted) disagreement rate or mean residual."""
        return self.ref["k" if self.test == "disagreement" else "s"] / self.ref["n"]

    def metrics(self) -> dict[str, Any]:
        w, cur, n_eff = self.best_window, self.window_value, self.window_effective_n
        out: dict[str, Any] = {"n_consumed": self.n, "statistic": self.stat, "threshold": self.h, "window_labels": w,
                               "window_effective_n": n_eff, "reference_n": int(self.ref.get("count", self.ref["n"])),
                               "before_window": self.before_value}
        if self.test == "disagreement":
            ci = list(wilson_interval(round(cur * n_eff), max(1, round(n_eff)))) if w and cur is not None and n_eff else None
            out.update(reference_disagreement=self.reference_value, disagreement_window=cur, disagreement_window_ci=ci)
        else:
            out.update(reference_residual_mean=self.reference_value, residual_window_mean=cur)
        return out

    def summary(self, what: str) -> str:
        label = "probe-evidence disagreement" if self.test == "disagreement" else "calibration residual mean"
        if self.best_window is None or self.window_value is None:
            return (f"{label} ({what}): no window above the reference; penalised GLR {self.stat:.1f} "
                    f"(threshold {self.h:.1f})")
        return (f"{label} ({what}) {self.window_value:.3f} over the last {self.best_window} labels vs reference "
                f"{self.reference_value:.3f} ({self.before_value:.3f} before the window); penalised GLR {self.stat:.1f} "
                f"(threshold {self.h:.1f})")


@dataclass(frozen=True)
class LabelledTuning:
    ref: RefSums
    h_disagreement: float
    h_residual: float
    level: float  # the shared quantile level of the two per-stream maxima
    simulated_false_alarm_rate: float  # either test, on streams not used to set the thresholds
    simulated_rates: dict[str, float]  # each test alone, on those streams
    horizon: int
    simulations: int
    penalty: dict[str, float] = field(default_factory=lambda: dict(GLR_PENALTY))  # λ per test

    def params(self, test: str) -> dict[str, Any]:
        return {"test": test, "ref": asdict(self.ref), "h": self.h_disagreement if test == "disagreement" else self.h_residual,
                "windows": list(GLR_WINDOWS), "step": GLR_STEP, "penalty": self.penalty[test], "n_ref": int(self.ref.count), "horizon": self.horizon,
                "p0": self.ref.k / self.ref.n, "budget": "disagreement and residual tests of the source together",
                "level": self.level, "joint_false_alarm_rate": self.simulated_false_alarm_rate,
                "rates": self.simulated_rates}


def _maxima(d0: NDArray, r0: NDArray, w0: NDArray, horizon: int, simulations: int, rng: np.random.Generator,
            penalty: dict[str, float]) -> NDArray:
    """Per-stream maxima (simulations, 2) on in-control streams whose reference is itself a draw.

    (disagreement, residual, weight) triples are drawn together, so the weights' variance is in the thresholds.
    """
    n = d0.size
    cols = _weighted_columns(d0, r0, w0)  # (n, 5)
    truth = rng.integers(0, n, size=(simulations, n), dtype=np.int32)  # bootstrap: an approximate posterior draw
    own = np.take_along_axis(truth, rng.integers(0, n, size=(simulations, n)), axis=1)  # its reference sample
    ref = cols[own].sum(axis=1)  # (simulations, 5)
    step = max(GLR_STEP, (CHUNK_CELLS // simulations) // GLR_STEP * GLR_STEP)
    parts = [np.zeros((simulations, 1, len(SUMS)))]
    for start in range(0, horizon, step):
        t = min(step, horizon - start)
        idx = np.take_along_axis(truth, rng.integers(0, n, size=(simulations, t)), axis=1)
        cp = _checkpoints(cols[idx])[:, 1:, :] + parts[-1][:, -1:, :]
        parts.append(cp)
    gb, gr = bank_statistics(np.concatenate(parts, axis=1), ref, penalty=penalty)
    return np.stack([gb.max(axis=1), gr.max(axis=1)], axis=1)


def _joint_rate(mx: NDArray, h: NDArray) -> float:
    return float(np.mean((mx > h[None, :]).any(axis=1)))


def tune_labelled(scores: ArrayLike, correct: ArrayLike, *, threshold: float = 0.5, target: float = 0.05,
                  horizon: int = 20_000, simulations: int = 1000, rng: np.random.Generator | None = None,
                  penalty: dict[str, float] = GLR_PENALTY, weights: ArrayLike | None = None) -> LabelledTuning:
    """Tune both tests on a reference of (score, evidence) pairs under one false-alarm budget.

    ``weights``: 1 / inclusion probability of each pair (spot checks); None for labels (all 1).
    """
    check_budget(target, horizon, simulations)
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(correct).astype(bool).ravel()
    if s.size != y.size or s.size < 30 or not np.all(np.isfinite(s)):
        raise ValueError(f"need at least 30 finite (score, evidence) pairs of equal length, got {s.size} and {y.size}")
    rng = rng if rng is not None else np.random.default_rng()
    w0 = np.ones(s.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w0.size != s.size or not np.all(np.isfinite(w0)) or np.any(w0 <= 0):
        raise ValueError(f"need one finite positive weight per pair, got {w0.size} for {s.size} pairs")
    d0 = (s >= threshold) != y
    r0 = y.astype(np.float64) - s
    if r0.std() <= 0:
        raise ValueError("reference residuals have zero spread")
    mx = _maxima(d0, r0, w0, horizon, simulations, rng, penalty)
    lo, hi = 1.0 - target, 1.0
    for _ in range(40):  # the shared level at which "either alarms" happens on the target share of streams
        mid = (lo + hi) / 2.0
        if _joint_rate(mx, np.quantile(mx, mid, axis=0)) > target:
            lo = mid
        else:
            hi = mid
    level = min(1.0, hi + math.sqrt(target * (1.0 - target) / simulations) / 2.0)  # margin for tuning noise
    h = np.quantile(mx, level, axis=0)
    check = _maxima(d0, r0, w0, horizon, simulations, rng, penalty)
    far = _joint_rate(check, h)
    rates = {name: float(np.mean(check[:, i] > h[i])) for i, name in enumerate(TESTS)}
    log.info("labelled detectors tuned on %d reference labels: h disagreement %.2f residual %.2f; simulated "
             "false alarms %.3f (either), %s", s.size, h[0], h[1], far, rates)
    return LabelledTuning(RefSums.of(d0, r0, w0), float(h[0]), float(h[1]), float(level), far, rates, horizon, simulations,
                          dict(penalty))


def first_alarms(t: LabelledTuning, disagree: NDArray[np.bool_], residual: NDArray[np.float64],
                 weight: NDArray[np.float64] | None = None) -> NDArray[np.int64]:
    """First label index (M,) at which either test alarms; -1 when none (vectorised, the daemon's rule)."""
    gb, gr = bank_statistics(checkpoint_sums(disagree, residual, weight), t.ref, penalty=t.penalty)
    al = (gb > t.h_disagreement) | (gr > t.h_residual)
    return np.where(al.any(axis=1), (al.argmax(axis=1) + 1) * GLR_STEP - 1, -1)
