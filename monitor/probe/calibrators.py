"""One-dimensional calibration maps of a probe's logit: Platt, temperature, isotonic.

``probe train`` fits one on its ``calib`` split (logits of the freshly fitted head);
``probe recalibrate`` fits one on the freshest labels (logits recovered from the stored scores).
Either way the map is folded into the probe head (:meth:`Calibrator.fold`): Platt and temperature
scaling are affine in the logit and go into the linear weights (the ONNX graph stays
``Sigmoid(MatMul + Add)``), isotonic regression becomes the head's monotone table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.probe.head import ProbeHead

__all__ = ["METHODS", "Calibrator", "fit_calibrator", "logit", "CalibrationFitError"]

log = logging.getLogger(__name__)

# simplest first: the order breaks near-ties when a method is chosen on held-out labels
METHODS = ("temperature", "platt", "isotonic")
_EPS = 1e-7  # float32 sigmoid saturates near 1 - 6e-8: logits of stored scores are clipped to this


class CalibrationFitError(ValueError):
    """The map cannot be fitted as asked (e.g. a non-positive slope: the scores no longer rank)."""


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities, clipped away from 0 and 1 (stored float32 scores can be exactly 1)."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


@dataclass(frozen=True)
class Calibrator:
    """``p = sigmoid(a * z + c)`` (platt, temperature with c = 0, a = 1/T) or ``p = iso(sigmoid(z))``."""

    method: str
    a: float = 1.0
    c: float = 0.0
    iso_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    iso_y: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def apply(self, z: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of logits ``z``."""
        z = np.asarray(z, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(_sigmoid(z), self.iso_x, self.iso_y)
        return _sigmoid(self.a * z + self.c)

    def params(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"knots": int(len(self.iso_x))}
        if self.method == "temperature":
            return {"temperature": 1.0 / self.a}
        return {"a": self.a, "c": self.c}

    def fold(self, head: ProbeHead) -> ProbeHead:
        """The head whose output is this map applied to ``head``'s output logit.

        A head without a table takes Platt/temperature into its weights (same direction, scaled
        by ``a`` > 0) and an isotonic map as its table. A head that already has a table keeps its
        weights and gets the composition as a new table: on the old knots plus a dense logit grid
        (Platt, temperature: within ~1e-3), plus the new knots' preimages (isotonic: exact).
        """
        if not len(head.iso_x):
            if self.method == "isotonic":
                return head.with_isotonic(self.iso_x, self.iso_y)
            return head.with_platt(self.a, self.c)
        old_x, old_y = head.iso_x.astype(np.float64), head.iso_y.astype(np.float64)
        parts = [old_x, _sigmoid(np.linspace(-16.0, 16.0, 641))]  # smooth maps: a dense grid is enough
        if self.method == "isotonic":  # piecewise linear both: exact with the new knots' preimages
            parts.append(np.interp(self.iso_x, old_y, old_x))
        grid = np.unique(np.concatenate(parts))
        return head.with_isotonic(grid, self.apply(logit(head.calibrate(grid))))


def fit_calibrator(method: str, z: np.ndarray, y: np.ndarray, *, positive_slope: bool = True) -> Calibrator:
    """Fit ``method`` on logits ``z`` and outcomes ``y`` (both classes needed).

    ``positive_slope``: refuse a Platt/temperature fit whose slope is not positive (it would turn
    the ranking upside down); ``probe train`` keeps whatever its calib split gives.
    """
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    z = np.asarray(z, dtype=np.float64).ravel()
    yi = np.asarray(y).astype(int).ravel()
    if z.shape != yi.shape:
        raise ValueError(f"logits and outcomes differ in length: {z.size} != {yi.size}")
    if yi.min(initial=1) == yi.max(initial=0):
        raise CalibrationFitError("calibration needs both correct and incorrect samples")
    if method in ("platt", "temperature"):
        platt = method == "platt"
        # effectively unregularised; temperature scaling is the same fit without an intercept
        lr = LogisticRegression(C=1e6, max_iter=1000, fit_intercept=platt).fit(z[:, None], yi)
        a = float(lr.coef_[0, 0])
        c = float(lr.intercept_[0]) if platt else 0.0
        if positive_slope and a <= 0:
            raise CalibrationFitError(f"{method} fit has slope {a:.3g} <= 0: the probe's scores no longer "
                                      "rank correct above incorrect answers")
        log.info("%s scaling: logit' = %.4f * logit %+.4f", method, a, c)
        return Calibrator(method, a=a, c=c)
    if method == "isotonic":
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(_sigmoid(z), yi)
        return Calibrator(method, iso_x=np.asarray(iso.X_thresholds_, np.float64),
                          iso_y=np.asarray(iso.y_thresholds_, np.float64))
    raise ValueError(f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}")
