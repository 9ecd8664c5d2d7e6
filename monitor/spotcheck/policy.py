"""Which samples get a spot check: a rate, a priority near the probe's decision boundary, a budget.

Every candidate gets an inclusion probability before its draw (Poisson sampling):

    a_i  = u + (1 - u) * w_i / mean(w)           relative priority, mean 1
    pi_i = s * min(1, c * a_i)                    c such that mean(min(1, c * a_i)) = rate

``u`` is the uniform share, ``w_i = max(0, 1 - |p_i - threshold| / width)`` a triangular weight
that is largest at the threshold, and ``mean(w)`` is taken over the candidates decided together.
Probabilities capped at 1 pass their excess to the others, so before budget scaling the expected
share checked equals ``rate`` (``rate = 1`` checks everything). The
budget scale ``s`` (<= 1) shrinks every probability so the expected compute per hour fits
``seconds_per_hour``. Because pi_i is fixed before sample i's draw and recorded, the
Horvitz-Thompson estimator sum(y_i / pi_i) over checked samples is unbiased for the population
total of any quantity y (for example "the served answer agrees with the majority").

A sample whose draw succeeded is always checked (never dropped for budget: that would bias the
estimate); the hard budget stops *deciding* more samples, which stay pending for a later run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Decision",
    "SelectionPolicy",
    "boundary_weights",
    "horvitz_thompson_total",
    "horvitz_thompson_mean",
]

REASON_BOUNDARY = "boundary"
REASON_UNIFORM = "uniform"


def _capped(a: np.ndarray, total: float) -> np.ndarray:
    """Probabilities proportional to ``a`` summing to ``total``, capped at 1 (excess redistributed)."""
    pi = np.zeros(a.size)
    capped = np.zeros(a.size, dtype=bool)
    for _ in range(a.size + 1):
        free = ~capped
        rest = total - capped.sum()
        mass = a[free].sum()
        if rest <= 0 or mass <= 0:
            pi[free] = 0.0
            break
        pi[free] = a[free] * (rest / mass)
        over = free & (pi >= 1.0)
        if not over.any():
            break
        capped |= over
        pi[capped] = 1.0
    return np.clip(pi, 0.0, 1.0)


def boundary_weights(scores: np.ndarray, threshold: np.ndarray | float, width: float) -> np.ndarray:
    """Triangular priority weight: 1 at the threshold, 0 beyond ``width``; 0 for a missing score."""
    if width <= 0:
        raise ValueError(f"boundary_width must be > 0, got {width}")
    s = np.asarray(scores, dtype=float)
    w = np.clip(1.0 - np.abs(s - threshold) / width, 0.0, 1.0)
    return np.where(np.isnan(s), 0.0, w)


@dataclass(frozen=True)
class Decision:
    index: int  # position in the candidate list
    selected: bool
    inclusion_prob: float
    reason: str  # boundary | uniform when selected, "" otherwise


@dataclass(frozen=True)
class SelectionPolicy:
    rate: float  # target expected share of candidates checked
    uniform_share: float  # part of the rate spread uniformly over all candidates
    boundary_width: float  # |p - threshold| beyond this gets only the uniform part
    seconds_per_hour: float  # compute budget (device seconds on GPU, wall seconds on CPU)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"spotcheck.rate must be in [0, 1], got {self.rate}")
        if not 0.0 <= self.uniform_share <= 1.0:
            raise ValueError(f"spotcheck.uniform_share must be in [0, 1], got {self.uniform_share}")
        if self.boundary_width <= 0:
            raise ValueError(f"spotcheck.boundary_width must be > 0, got {self.boundary_width}")
        if self.seconds_per_hour < 0:
            raise ValueError(f"spotcheck.gpu_seconds_per_hour must be >= 0, got {self.seconds_per_hour}")

    def probabilities(
        self, scores: Sequence[float] | np.ndarray, threshold: Sequence[float] | np.ndarray | float, scale: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(pi, pi_uniform): inclusion probabilities and their uniform part, both scaled by ``scale``."""
        s = np.asarray(scores, dtype=float)
        if s.ndim != 1:
            raise ValueError("scores must be one-dimensional")
        if s.size == 0:
            return np.zeros(0), np.zeros(0)
        scale = float(np.clip(scale, 0.0, 1.0))
        w = boundary_weights(s, np.asarray(threshold, dtype=float), self.boundary_width)
        u = self.uniform_share
        # relative priority a_i (mean 1); where nobody is near the boundary it is uniform
        a = u + (1.0 - u) * w / w.mean() if w.mean() > 0 else np.ones(s.size)
        pi = scale * _capped(a, self.rate * s.size)
        pi_uniform = pi * np.where(a > 0, u / np.maximum(a, 1e-300), 0.0) if w.mean() > 0 else pi
        return pi, pi_uniform

    def budget_scale(
        self,
        *,
        candidates_per_hour: float,
        seconds_per_check: float,
        spent_last_hour: float,
        mean_unscaled_pi: float | None = None,
    ) -> float:
        """Shrink factor so the expected compute per hour stays within the budget; 0 once spent.

        ``candidates_per_hour`` is the recent arrival rate of candidates; the expected hourly
        spend at full rate is arrivals x mean(pi) x seconds per check.
        """
        if self.seconds_per_hour <= 0 or spent_last_hour >= self.seconds_per_hour:
            return 0.0
        mean_pi = self.rate if mean_unscaled_pi is None else mean_unscaled_pi
        expected = max(candidates_per_hour, 0.0) * mean_pi * max(seconds_per_check, 0.0)
        if expected <= 0:
            return 1.0
        return float(min(1.0, self.seconds_per_hour / expected))

    def decide(
        self,
        scores: Sequence[float] | np.ndarray,
        threshold: Sequence[float] | np.ndarray | float,
        rng: np.random.Generator,
        scale: float = 1.0,
    ) -> list[Decision]:
        """Draw each candidate independently with its inclusion probability."""
        pi, pi_u = self.probabilities(scores, threshold, scale)
        draws = rng.random(pi.size)
        out = []
        for i, (p, pu, d) in enumerate(zip(pi, pi_u, draws)):
            sel = bool(d < p)
            reason = (REASON_UNIFORM if d < pu else REASON_BOUNDARY) if sel else ""
            out.append(Decision(index=i, selected=sel, inclusion_prob=float(p), reason=reason))
        return out


def horvitz_thompson_total(values: Sequence[float], inclusion_probs: Sequence[float]) -> float:
    """Unbiased estimate of a population total from the checked samples' values and probabilities."""
    v = np.asarray(values, dtype=float)
    p = np.asarray(inclusion_probs, dtype=float)
    if v.shape != p.shape:
        raise ValueError("values and inclusion_probs differ in length")
    if np.any(p <= 0) or np.any(p > 1):
        raise ValueError("inclusion probabilities must be in (0, 1]")
    return float(np.sum(v / p))


def horvitz_thompson_mean(values: Sequence[float], inclusion_probs: Sequence[float], population: int) -> float:
    """Unbiased estimate of a population mean (HT total / population size)."""
    if population <= 0:
        raise ValueError("population must be positive")
    return horvitz_thompson_total(values, inclusion_probs) / population
