"""Synthetic labelled streams from a binormal probe, for tuning checks, tests and the benchmark.

The probe's latent score is N(d', 1) for correct answers and N(0, 1) for wrong ones, with
d' = √2 Φ⁻¹(AUROC). The reported score is the reference-calibrated posterior
p = σ(logit(acc) + d'·z − d'²/2) and the verdict is p ≥ 0.5. With AUROC 0.90 and 86% accuracy
(RESEARCH.md) the probe's disagreement with the evidence is 0.0996 ≈ 0.10.

Drift is concept drift: the separation falls to the d' that gives the wanted disagreement rate,
while the probe keeps its reference calibration map (it does not know), so the scores also become
miscalibrated — what the residual CUSUM watches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq
from scipy.stats import norm

__all__ = ["BinormalProbe", "Stream"]


@dataclass(frozen=True)
class Stream:
    scores: NDArray[np.float64]  # (M, T) calibrated probe scores
    correct: NDArray[np.bool_]  # (M, T) evidence

    @property
    def disagree(self) -> NDArray[np.bool_]:
        return (self.scores >= 0.5) != self.correct

    @property
    def residual(self) -> NDArray[np.float64]:
        return self.correct.astype(np.float64) - self.scores


@dataclass(frozen=True)
class BinormalProbe:
    auroc: float = 0.90  # RESEARCH.md: binormal probe AUROC 0.90
    accuracy: float = 0.86  # and 86% model accuracy

    @property
    def d(self) -> float:
        return math.sqrt(2.0) * float(norm.ppf(self.auroc))

    @property
    def _logit_acc(self) -> float:
        return math.log(self.accuracy / (1.0 - self.accuracy))

    @property
    def z_threshold(self) -> float:
        """Latent score where the calibrated probability is 0.5."""
        return (self.d**2 / 2.0 - self._logit_acc) / self.d

    def disagreement(self, d: float | None = None) -> float:
        """Probe–evidence disagreement rate when the true separation is ``d`` (default: reference)."""
        d = self.d if d is None else d
        zt = self.z_threshold
        return float(self.accuracy * norm.cdf(zt - d) + (1.0 - self.accuracy) * norm.sf(zt))

    def d_for_disagreement(self, rate: float) -> float:
        """The separation that gives disagreement ``rate`` (concept drift of the probe)."""
        lo, hi = 1e-6, self.d
        if not self.disagreement(hi) <= rate <= self.disagreement(lo):
            raise ValueError(f"disagreement {rate} is not reachable by lowering d' (reference {self.disagreement():.4f})")
        return float(brentq(lambda x: self.disagreement(x) - rate, lo, hi))

    def sample(self, m: int, t: int, rng: np.random.Generator, d: float | None = None) -> Stream:
        """``m`` independent streams of ``t`` labelled samples with true separation ``d``."""
        d = self.d if d is None else d
        correct = rng.random((m, t)) < self.accuracy
        z = rng.standard_normal((m, t)) + np.where(correct, d, 0.0)
        logits = self._logit_acc + self.d * z - self.d**2 / 2.0  # reference calibration map
        return Stream(1.0 / (1.0 + np.exp(-logits)), correct)

    def sample_with_change(
        self, m: int, tau: int, t: int, rate_after: float, rng: np.random.Generator
    ) -> Stream:
        """Streams in control for ``tau`` samples, then drifted to disagreement ``rate_after``."""
        before = self.sample(m, tau, rng)
        after = self.sample(m, t - tau, rng, d=self.d_for_disagreement(rate_after))
        return Stream(
            np.concatenate([before.scores, after.scores], axis=1),
            np.concatenate([before.correct, after.correct], axis=1),
        )
