"""Is the monitor scoring the model that serves? The ``served_model_mismatch`` check.

The daemon re-runs its own copy of the weights; a production redeploy or swap under the same
served name (and often the same ``system_fingerprint``) would leave every probe score about the
wrong model. Two pieces of evidence compare production with the monitor's copy:

* **log-probabilities**: a sample captured with ``logprobs`` carries the served tokens'
  log-probabilities; the scorer recomputes them with a full pass over the same answer
  (``served_check.recompute_share`` of those samples). Per token the two are compared in log-odds,
  ``log p - log(1 - p)``, where a confident token (p = 0.9999 vs 0.999) is as visible as an
  uncertain one; a sample *exceeds* when its largest |Δ log-odds| is above
  ``served_check.token_tolerance``. Same weights in bf16 against the fp32 monitor stay far below
  the default 0.75 (largest of 3,000 fixture samples: 0.54, median 0.03; bench/served_check.py); answers whose token
  count differs from the recompute are not comparable and only counted.
* **greedy answers**: on spot-checked samples that were served greedily (``temperature: 0``),
  the monitor's own greedy answer should be the served one (a hook of the spot-check job).

Each stream feeds a Bernoulli CUSUM on its exceedances (in-control rate ``p0``, tuned to detect
``p1``; 20,000 checks at a true rate of 0.005 fire in 3% of runs, the same-weight rate measured is
0 in 3,000): ``served_model_mismatch`` (critical) fires when either crosses ``threshold`` and
resolves after ``clear_after`` agreeing checks in a row (:meth:`ServedModelCheck.verdict`; the
daemon's jobs raise and resolve the alert with ``alerts.builtin.report_served_mismatch``). A
changed ``system_fingerprint`` in the served responses is kept as a hint in the alert's metrics;
it never fires by itself.

State lives in the daemon process (one :class:`ServedModelCheck` per served model, shared by the
score and spot-check jobs through :data:`CHECKS`); a restart starts the CUSUMs afresh.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from monitor.config import ServedCheckConfig

__all__ = [
    "MismatchParams",
    "MismatchVerdict",
    "BernoulliCusum",
    "ServedModelCheck",
    "ServedChecks",
    "CHECKS",
    "log_odds",
    "logprob_discrepancy",
    "answers_differ",
]

log = logging.getLogger(__name__)

_LOG_ODDS_CAP = 16.0  # |log-odds| beyond this (p within 1e-7 of 0 or 1) is float noise


@dataclass(frozen=True)
class MismatchParams:
    """The check's knobs (``served_check`` in the config); defaults carry their reasons."""

    token_tolerance: float = 0.75  # |Δ log-odds| per token; bf16 vs fp32 same weights: max 0.54 in 3,000
    p0: float = 0.01  # exceedance rate the CUSUMs accept (measured same-weight rate: 0 in 3,000)
    p1: float = 0.2  # exceedance rate they are tuned to detect
    threshold: float = 8.0  # CUSUM decision interval: 3 exceedances in a row fire
    greedy_p0: float = 0.02  # greedy answers may flip on near-ties under dtype noise
    greedy_p1: float = 0.25
    clear_after: int = 50  # agreeing checks in a row that resolve a firing mismatch

    @classmethod
    def from_config(cls, cfg: ServedCheckConfig) -> MismatchParams:
        return cls(
            token_tolerance=cfg.token_tolerance, p0=cfg.same_weight_rate, p1=cfg.mismatch_rate,
            threshold=cfg.threshold, greedy_p0=cfg.greedy_same_weight_rate, greedy_p1=cfg.greedy_mismatch_rate,
            clear_after=cfg.clear_after,
        )  # fmt: skip


def log_odds(logprobs: Sequence[float]) -> list[float]:
    """``log p - log(1 - p)`` of each log-probability, capped at ±16."""
    out = []
    for lp in logprobs:
        lp = min(float(lp), -1e-12)
        out.append(max(-_LOG_ODDS_CAP, min(_LOG_ODDS_CAP, lp - math.log(-math.expm1(lp)))))
    return out


def logprob_discrepancy(served: Sequence[float], recomputed: Sequence[float]) -> float | None:
    """Largest |Δ log-odds| over the answer's tokens; None when the token counts differ (or none)."""
    if not served or len(served) != len(recomputed):
        return None
    return max(abs(a - b) for a, b in zip(log_odds(served), log_odds(recomputed)))


def answers_differ(served: str, greedy: str) -> bool:
    """The two answers are different answers (case, spacing and trailing punctuation aside)."""
    from monitor.spotcheck.answers import normalize_answer

    return normalize_answer(served) != normalize_answer(greedy)


@dataclass
class BernoulliCusum:
    """CUSUM of the log-likelihood ratio p1 vs p0 on a stream of exceedance indicators."""

    p0: float
    p1: float
    threshold: float
    value: float = 0.0
    checks: int = 0
    exceeded: int = 0

    def update(self, exceeded: bool) -> None:
        self.checks += 1
        if exceeded:
            self.exceeded += 1
            self.value += math.log(self.p1 / self.p0)
        else:
            self.value = max(0.0, self.value + math.log((1 - self.p1) / (1 - self.p0)))

    @property
    def crossed(self) -> bool:
        return self.value >= self.threshold

    def state(self) -> dict[str, Any]:
        return {"cusum": round(self.value, 4), "threshold": self.threshold, "checks": self.checks,
                "exceeded": self.exceeded}


@dataclass
class MismatchVerdict:
    """The check's state now, as the ``served_model_mismatch`` alert carries it."""

    model: str
    status: Literal["firing", "clear", "partial"]  # partial: never checked
    metrics: dict[str, Any]
    detector_state: dict[str, Any]
    summary: str


@dataclass
class ServedModelCheck:
    """The mismatch test of one served model: its two CUSUMs, hysteresis and the fingerprint hint."""

    model: str
    params: MismatchParams = MismatchParams()
    firing: bool = False
    agree_streak: int = 0  # agreeing checks (either stream) since the last exceedance
    incomparable: int = 0  # answers whose token count differs from the recompute
    fingerprints: list[str] = field(default_factory=list)  # distinct system_fingerprints seen, in order
    last_discrepancy: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        p = self.params
        self.logprobs = BernoulliCusum(p.p0, p.p1, p.threshold)
        self.greedy = BernoulliCusum(p.greedy_p0, p.greedy_p1, p.threshold)

    def observe_logprobs(self, served: Sequence[float], recomputed: Sequence[float]) -> float | None:
        """Feed one sample's served and recomputed answer log-probabilities; returns its discrepancy."""
        d = logprob_discrepancy(served, recomputed)
        with self.lock:
            if d is None:
                self.incomparable += 1
                return None
            self.last_discrepancy = d
            self._settle(self.logprobs, d > self.params.token_tolerance)
        return d

    def observe_greedy(self, served_answer: str, greedy_answer: str) -> bool:
        """Feed one greedily served sample's answer and the monitor's greedy answer; True if they differ."""
        differ = answers_differ(served_answer, greedy_answer)
        with self.lock:
            self._settle(self.greedy, differ)
        return differ

    def observe_fingerprint(self, fingerprint: Any) -> None:
        if isinstance(fingerprint, str) and fingerprint and fingerprint not in self.fingerprints:
            with self.lock:
                self.fingerprints.append(fingerprint)
            if len(self.fingerprints) > 1:
                log.warning("model %s: the server's system_fingerprint changed (%s); the log-prob and greedy "
                            "checks say whether the weights did", self.model, " -> ".join(self.fingerprints))

    def _settle(self, test: BernoulliCusum, exceeded: bool) -> None:
        test.update(exceeded)
        self.agree_streak = 0 if exceeded else self.agree_streak + 1
        if test.crossed:
            self.firing = True
        if self.firing and self.agree_streak >= self.params.clear_after:
            self.firing = False  # agreement is back: both tests start afresh
            self.logprobs.value = self.greedy.value = 0.0

    def verdict(self) -> MismatchVerdict:
        """The verdict now: firing, clear, or partial (never checked)."""
        with self.lock:
            checked = self.logprobs.checks + self.greedy.checks
            status: Literal["firing", "clear", "partial"] = (
                "firing" if self.firing else ("clear" if checked else "partial"))
            metrics = {
                "logprob_checks": self.logprobs.checks, "logprob_exceeded": self.logprobs.exceeded,
                "last_logprob_discrepancy": self.last_discrepancy, "token_tolerance": self.params.token_tolerance,
                "greedy_checks": self.greedy.checks, "greedy_disagreed": self.greedy.exceeded,
                "incomparable": self.incomparable,
                "system_fingerprints": list(self.fingerprints),
                "system_fingerprint_changed": len(self.fingerprints) > 1,
                "statistic": round(max(self.logprobs.value, self.greedy.value), 4), "threshold": self.params.threshold,
            }  # fmt: skip
            state = {"name": "served_model_cusums", "logprobs": self.logprobs.state(), "greedy": self.greedy.state(),
                     "agree_streak": self.agree_streak, "clear_after": self.params.clear_after}
        summary = (
            f"model {self.model!r}: the served model is not the monitor's copy: "
            f"{self.logprobs.exceeded} of {self.logprobs.checks} served answers' log-probabilities differ from the "
            f"recompute by more than {self.params.token_tolerance} log-odds, {self.greedy.exceeded} of "
            f"{self.greedy.checks} greedy answers differ; every probe score of this model is about the wrong weights"
        )
        return MismatchVerdict(self.model, status, metrics, state, summary)


class ServedChecks:
    """One :class:`ServedModelCheck` per served model, for the whole daemon process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks: dict[str, ServedModelCheck] = {}

    def get(self, model: str, params: MismatchParams) -> ServedModelCheck:
        with self._lock:
            check = self._checks.get(model)
            if check is None or check.params != params:
                check = self._checks[model] = ServedModelCheck(model, params)
            return check

    def clear(self) -> None:
        with self._lock:
            self._checks.clear()


CHECKS = ServedChecks()
