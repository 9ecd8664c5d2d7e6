"""The labelled detectors of one evidence source: a self-starting windowed GLR bank, tuned under
the reference's own uncertainty, two tests under one false-alarm budget.

Every :data:`GLR_STEP` labels, for each window w in :data:`GLR_WINDOWS` (the last w labels), the
window is compared with everything before it — the reference plus the monitored labels that
precede the window (self-starting: the in-control past sharpens the estimate the window is
compared with, so a 400-label reference is not the only yardstick for long):

* ``disagreement``: one-sided binomial GLR (log-likelihood ratio) that the window's
  probe–evidence disagreement rate is above the rate before it;
* ``residual``: two-sided Gaussian GLR, z²/2, on the mean calibration residual (evidence − score).

The statistic is the maximum over windows; short windows catch large shifts within tens of
labels (0.10 → 0.25), long ones small shifts (0.10 → 0.127). Because both sides are estimates,
the statistic's null distribution barely depends on the reference size, and the thresholds are
set by simulation where the reference is itself a draw: each simulated stream's truth is a
bootstrap resample of the reference (an approximate posterior draw), its reference a fresh sample
of ``n_ref`` labels from that truth, and its labels come from the truth. The two thresholds share
one quantile level, chosen so that the share of ``horizon``-label streams on which *either* test
alarms is the target. In-control labels are exchangeable, so the order they arrive in (label
delay) does not change the false-alarm rate; the benchmark adds label delay to drifted streams.

Spot-check weights (not yet applied here): the self-consistency bank consumes spot checks
unweighted and compares them with the reference's unweighted rate (``disagreement``, not
``disagreement_weighted``). Both sides are draws under the same selection design, so this tests
"did the rate of the *checked* stream change", and stays valid while the design is fixed; it is
not an estimate of the population rate (the alert's calibration window, which is weighted, is).
It breaks when the design moves (budget or policy change alters the share of uncertain scores
checked): the unweighted rate then moves with no model change. Weighting by 1 / inclusion
probability needs Σw per window as the binomial/Gaussian denominators (a fourth checkpoint
column), the reference sums weighted the same way, and the tuning simulation bootstrapping
(disagree, residual, weight) triples so the thresholds carry the weights' extra variance; until
then the budget/policy should be changed only with a new reference.

State is plain JSON: the reference sums and the cumulative sums at the last checkpoints.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from monitor.calibration.metrics import wilson_interval
from monitor.detect.protocol import AlarmBookkeeping
from monitor.detect.tuning import CHUNK_CELLS, check_budget

__all__ = ["GLR_WINDOWS", "GLR_STEP", "RefSums", "GlrBank", "LabelledTuning", "tune_labelled",
           "bank_statistics", "first_alarms", "checkpoint_sums"]

log = logging.getLogger(__name__)

GLR_WINDOWS = (25, 50, 100, 200, 400, 800, 1600, 3200, 6400)  # labels per window (multiples of GLR_STEP)
GLR_STEP = 5  # the bank is evaluated every GLR_STEP labels, in the daemon and in the simulation alike
TESTS = ("disagreement", "residual")


def _loglik(k: Any, n: Any) -> Any:
    """k log(k/n) + (n−k) log(1−k/n), with 0 log 0 = 0."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(k > 0, k * np.log(np.where(k > 0, k / n, 1.0)), 0.0)
        b = np.where(n - k > 0, (n - k) * np.log(np.where(n - k > 0, 1.0 - k / n, 1.0)), 0.0)
    return a + b


def _pair(kb, sb, qb, w, ka, sa, qa, na) -> tuple[Any, Any]:
    """(binomial, Gaussian) GLR statistics of a window (kb, sb, qb over w labels) vs before it (… over na)."""
    llr = _loglik(kb, w) + _loglik(ka, na) - _loglik(ka + kb, na + w)
    binom = np.where(kb / w > ka / na, llr, 0.0)
    tot = na + w
    var = np.maximum((qa + qb) / tot - ((sa + sb) / tot) ** 2, 1e-12)
    gauss = (sb / w - sa / na) ** 2 / (var * (1.0 / w + 1.0 / na)) / 2.0
    return binom, gauss


@dataclass(frozen=True)
class RefSums:
    """Sufficient statistics of a reference: disagreements, labels, Σ residual, Σ residual²."""

    k: float
    n: float
    s: float
    q: float

    @classmethod
    def of(cls, disagree: ArrayLike, residual: ArrayLike) -> RefSums:
        d = np.asarray(disagree, dtype=np.float64)
        r = np.asarray(residual, dtype=np.float64)
        return cls(float(d.sum()), float(d.size), float(r.sum()), float((r * r).sum()))


def checkpoint_sums(disagree: NDArray, residual: NDArray, step: int = GLR_STEP) -> NDArray[np.float64]:
    """Cumulative (disagreements, Σ r, Σ r²) at labels 0, step, 2·step, …: shape (M, J + 1, 3)."""
    m, t = disagree.shape
    cols = np.arange(step - 1, t - (t % step), step)
    out = np.zeros((m, cols.size + 1, 3))
    out[:, 1:, 0] = np.cumsum(disagree, axis=1, dtype=np.float64)[:, cols]
    out[:, 1:, 1] = np.cumsum(residual, axis=1)[:, cols]
    out[:, 1:, 2] = np.cumsum(residual * residual, axis=1)[:, cols]
    return out


def bank_statistics(cp: NDArray[np.float64], ref: RefSums | dict[str, NDArray], step: int = GLR_STEP,
                    windows: tuple[int, ...] = GLR_WINDOWS) -> tuple[NDArray, NDArray]:
    """(disagreement, residual) statistics (M, J) at every checkpoint of ``cp`` (M, J + 1, 3).

    ``ref`` is one reference for all rows, or a dict of per-row arrays k, n, s, q (simulation).
    """
    m, j1, _ = cp.shape
    get = (lambda a: getattr(ref, a)) if isinstance(ref, RefSums) else (lambda a: ref[a][:, None])  # type: ignore[index]
    k0, n0, s0, q0 = get("k"), get("n"), get("s"), get("q")
    gb = np.zeros((m, j1 - 1))
    gr = np.zeros((m, j1 - 1))
    for w in windows:
        back = w // step
        if back >= j1:
            continue
        cur, pre = cp[:, back:, :], cp[:, :j1 - back, :]
        nu = np.arange(j1 - back) * step  # monitored labels before the window
        b, g = _pair(cur[..., 0] - pre[..., 0], cur[..., 1] - pre[..., 1], cur[..., 2] - pre[..., 2], float(w),
                     k0 + pre[..., 0], s0 + pre[..., 1], q0 + pre[..., 2], n0 + nu[None, :])
        gb[:, back - 1:] = np.maximum(gb[:, back - 1:], b)
        gr[:, back - 1:] = np.maximum(gr[:, back - 1:], g)
    return gb, gr


@dataclass
class GlrBank(AlarmBookkeeping):
    """One test of the bank on a live stream (``update`` per label), its state plain JSON."""

    test: Literal["disagreement", "residual"]
    ref: dict[str, float]  # RefSums as a dict
    h: float
    step: int = GLR_STEP
    windows: list[int] = field(default_factory=lambda: list(GLR_WINDOWS))
    checkpoints: list[list[float]] = field(default_factory=lambda: [[0.0, 0.0, 0.0]])  # the last max(w)/step + 1
    partial: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    n: int = 0
    ones: int = 0  # disagreements consumed
    checkpoints_seen: int = 0  # checkpoints since the start (labels = step × this)
    stat: float = 0.0  # the statistic at the last checkpoint
    best_window: int | None = None
    window_value: float | None = None  # the driving window's rate (disagreement) or mean residual
    before_value: float | None = None  # the same before that window (reference + monitored past)
    alarms: int = 0
    last_alarm_n: int | None = None

    def update(self, disagree: bool, residual: float) -> bool:
        """Consume one label; True when the statistic crosses ``h`` upwards on it."""
        r = float(residual)
        self.partial = [self.partial[0] + float(bool(disagree)), self.partial[1] + r, self.partial[2] + r * r]
        self.n += 1
        self.ones += int(bool(disagree))
        if self.n % self.step:
            return False
        last = self.checkpoints[-1]
        self.checkpoints = (self.checkpoints + [[last[i] + self.partial[i] for i in range(3)]])[
            -(max(self.windows) // self.step + 1):]
        self.partial = [0.0, 0.0, 0.0]
        self.checkpoints_seen += 1
        was = self.firing
        self._test()
        return self._record(was)

    def retract(self, old: tuple[bool, float], new: tuple[bool, float]) -> bool:
        """Replace a consumed observation ``old`` (disagree, residual) by its correction ``new``.

        The stream keeps no per-label positions, so the difference enters the newest checkpoint
        (the correction is recent evidence: it counts in every window that ends now, and in the
        cumulative sums from here on); ``n`` is unchanged. The bank is tested again at once;
        True when the statistic crosses ``h`` upwards on the correction.
        """
        (d_old, r_old), (d_new, r_new) = old, new
        delta = (float(bool(d_new)) - float(bool(d_old)), float(r_new) - float(r_old),
                 float(r_new) ** 2 - float(r_old) ** 2)
        self.ones += int(bool(d_new)) - int(bool(d_old))
        self.checkpoints[-1] = [self.checkpoints[-1][i] + delta[i] for i in range(3)]
        was = self.firing
        self._test()
        return self._record(was)

    def _test(self) -> None:
        ref = self.ref
        cur = self.checkpoints[-1]
        best, arg, vals = 0.0, None, (None, None)
        for w in self.windows:
            back = w // self.step
            if back > self.checkpoints_seen or back >= len(self.checkpoints):
                continue
            pre = self.checkpoints[-1 - back]
            na = ref["n"] + (self.checkpoints_seen - back) * self.step
            b, g = _pair(cur[0] - pre[0], cur[1] - pre[1], cur[2] - pre[2], float(w),
                         ref["k"] + pre[0], ref["s"] + pre[1], ref["q"] + pre[2], na)
            v = float(b if self.test == "disagreement" else g)
            if v > best:
                i = 0 if self.test == "disagreement" else 1
                best, arg, vals = v, w, ((cur[i] - pre[i]) / w, (ref["k" if i == 0 else "s"] + pre[i]) / na)
        self.stat, self.best_window = best, arg
        self.window_value, self.before_value = vals

    @property
    def firing(self) -> bool:
        return self.stat > self.h

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GlrBank:
        return cls(**state)

    @property
    def reference_value(self) -> float:
        """The reference's disagreement rate or mean residual."""
        return self.ref["k" if self.test == "disagreement" else "s"] / self.ref["n"]

    def metrics(self) -> dict[str, Any]:
        w, cur = self.best_window, self.window_value
        out: dict[str, Any] = {"n_consumed": self.n, "statistic": self.stat, "threshold": self.h, "window_labels": w,
                               "reference_n": int(self.ref["n"]), "before_window": self.before_value}
        if self.test == "disagreement":
            out.update(reference_disagreement=self.reference_value, disagreement_window=cur,
                       disagreement_window_ci=list(wilson_interval(round(cur * w), w)) if w and cur is not None else None)
        else:
            out.update(reference_residual_mean=self.reference_value, residual_window_mean=cur)
        return out

    def summary(self, what: str) -> str:
        label = "probe-evidence disagreement" if self.test == "disagreement" else "calibration residual mean"
        if self.best_window is None or self.window_value is None:
            return f"{label} ({what}): no window above the reference; GLR {self.stat:.1f} (threshold {self.h:.1f})"
        return (f"{label} ({what}) {self.window_value:.3f} over the last {self.best_window} labels vs reference "
                f"{self.reference_value:.3f} ({self.before_value:.3f} before the window); GLR {self.stat:.1f} "
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

    def params(self, test: str) -> dict[str, Any]:
        return {"test": test, "ref": asdict(self.ref), "h": self.h_disagreement if test == "disagreement" else self.h_residual,
                "windows": list(GLR_WINDOWS), "step": GLR_STEP, "n_ref": int(self.ref.n), "horizon": self.horizon,
                "p0": self.ref.k / self.ref.n, "budget": "disagreement and residual tests of the source together",
                "level": self.level, "joint_false_alarm_rate": self.simulated_false_alarm_rate,
                "rates": self.simulated_rates}


def _maxima(d0: NDArray, r0: NDArray, horizon: int, simulations: int, rng: np.random.Generator) -> NDArray:
    """Per-stream maxima (simulations, 2) on in-control streams whose reference is itself a draw."""
    n = d0.size
    truth = rng.integers(0, n, size=(simulations, n), dtype=np.int32)  # bootstrap: an approximate posterior draw
    own = np.take_along_axis(truth, rng.integers(0, n, size=(simulations, n)), axis=1)  # its reference sample
    ref = {"k": d0[own].sum(axis=1).astype(np.float64), "n": np.full(simulations, float(n)),
           "s": r0[own].sum(axis=1), "q": (r0[own] ** 2).sum(axis=1)}
    step = max(GLR_STEP, (CHUNK_CELLS // simulations) // GLR_STEP * GLR_STEP)
    parts = [np.zeros((simulations, 1, 3))]
    for start in range(0, horizon, step):
        t = min(step, horizon - start)
        idx = np.take_along_axis(truth, rng.integers(0, n, size=(simulations, t)), axis=1)
        cp = checkpoint_sums(d0[idx], r0[idx])[:, 1:, :] + parts[-1][:, -1:, :]
        parts.append(cp)
    gb, gr = bank_statistics(np.concatenate(parts, axis=1), ref)
    return np.stack([gb.max(axis=1), gr.max(axis=1)], axis=1)


def _joint_rate(mx: NDArray, h: NDArray) -> float:
    return float(np.mean((mx > h[None, :]).any(axis=1)))


def tune_labelled(scores: ArrayLike, correct: ArrayLike, *, threshold: float = 0.5, target: float = 0.05,
                  horizon: int = 20_000, simulations: int = 1000,
                  rng: np.random.Generator | None = None) -> LabelledTuning:
    """Tune both tests on a reference of (score, evidence) pairs under one false-alarm budget."""
    check_budget(target, horizon, simulations)
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(correct).astype(bool).ravel()
    if s.size != y.size or s.size < 30 or not np.all(np.isfinite(s)):
        raise ValueError(f"need at least 30 finite (score, evidence) pairs of equal length, got {s.size} and {y.size}")
    rng = rng if rng is not None else np.random.default_rng()
    d0 = (s >= threshold) != y
    r0 = y.astype(np.float64) - s
    if r0.std() <= 0:
        raise ValueError("reference residuals have zero spread")
    mx = _maxima(d0, r0, horizon, simulations, rng)
    lo, hi = 1.0 - target, 1.0
    for _ in range(40):  # the shared level at which "either alarms" happens on the target share of streams
        mid = (lo + hi) / 2.0
        if _joint_rate(mx, np.quantile(mx, mid, axis=0)) > target:
            lo = mid
        else:
            hi = mid
    level = min(1.0, hi + math.sqrt(target * (1.0 - target) / simulations) / 2.0)  # margin for tuning noise
    h = np.quantile(mx, level, axis=0)
    check = _maxima(d0, r0, horizon, simulations, rng)
    far = _joint_rate(check, h)
    rates = {name: float(np.mean(check[:, i] > h[i])) for i, name in enumerate(TESTS)}
    log.info("labelled detectors tuned on %d reference labels: h disagreement %.2f residual %.2f; simulated "
             "false alarms %.3f (either), %s", s.size, h[0], h[1], far, rates)
    return LabelledTuning(RefSums.of(d0, r0), float(h[0]), float(h[1]), float(level), far, rates, horizon, simulations)


def first_alarms(t: LabelledTuning, disagree: NDArray[np.bool_], residual: NDArray[np.float64]) -> NDArray[np.int64]:
    """First label index (M,) at which either test alarms; -1 when none (vectorised, the daemon's rule)."""
    gb, gr = bank_statistics(checkpoint_sums(disagree, residual), t.ref)
    al = (gb > t.h_disagreement) | (gr > t.h_residual)
    return np.where(al.any(axis=1), (al.argmax(axis=1) + 1) * GLR_STEP - 1, -1)
