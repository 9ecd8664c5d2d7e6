"""Choose a calibration map on held-out labels: stratified K-fold cross-validation.

Every fresh label is predicted by a map fitted on the other folds, so each method's held-out
log-loss uses all the labels and none of them twice. The method with the lowest held-out
log-loss wins, except that a simpler method (temperature < Platt < isotonic) within one standard
error of it is preferred (the one-standard-error rule: on a few hundred labels a more flexible
map "wins" by noise). The out-of-fold predictions of the chosen method are the honest "after"
figures; the map that ships is then fitted on all the labels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.probe.calibrators import METHODS, CalibrationFitError, fit_calibrator

__all__ = ["FOLDS", "MIN_PER_CLASS", "Candidate", "Choice", "choose_calibrator", "log_loss"]

log = logging.getLogger(__name__)

FOLDS = 5  # 4/5 of 200 labels fit each fold's map; 5 is the usual bias/variance compromise
MIN_PER_CLASS = 10  # correct and incorrect labels each, so every fold's fit sees both classes


def log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample negative log-likelihood of outcomes ``y`` under probabilities ``p``."""
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(y, dtype=np.float64)
    return -(y * np.log(q) + (1 - y) * np.log1p(-q))


@dataclass(frozen=True)
class Candidate:
    method: str  # a calibration method, or "current" (the probe's calibration as it is)
    log_loss: float | None  # mean held-out log-loss
    brier: float | None
    error: str | None = None  # why the method could not be fitted

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "log_loss": self.log_loss, "brier": self.brier, "error": self.error}


@dataclass(frozen=True)
class Choice:
    method: str
    reason: str
    candidates: tuple[Candidate, ...]
    held_out: np.ndarray  # out-of-fold probabilities of the chosen method, in input order
    folds: int


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    k = min(folds, int(y.sum()), int(len(y) - y.sum()))
    if k < 2:
        raise CalibrationFitError("choosing a calibration needs at least 2 correct and 2 incorrect labels")
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y.astype(int)))


def _out_of_fold(method: str, z: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    out = np.empty(len(y))
    for train, test in splits:
        out[test] = fit_calibrator(method, z[train], y[train]).apply(z[test])
    return out


def choose_calibrator(z: np.ndarray, y: np.ndarray, method: str = "auto", *, folds: int = FOLDS,
                      seed: int = 0) -> Choice:
    """Compare every method on held-out folds; pick ``method`` or, with ``"auto"``, by log-loss.

    ``z``: the probe's logits (``calibrators.logit`` of stored scores); ``y``: correct (0/1).
    Raises :class:`CalibrationFitError` when the asked method, or every method, cannot be fitted.
    """
    if method != "auto" and method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected auto or one of {', '.join(METHODS)}")
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    splits = _folds(y, folds, seed)
    current = log_loss(1 / (1 + np.exp(-z)), y)
    candidates = [Candidate("current", float(current.mean()), float(np.mean((1 / (1 + np.exp(-z)) - y) ** 2)))]
    preds: dict[str, np.ndarray] = {}
    losses: dict[str, np.ndarray] = {}
    for m in METHODS:
        try:
            preds[m] = _out_of_fold(m, z, y, splits)
        except CalibrationFitError as e:
            candidates.append(Candidate(m, None, None, str(e)))
            continue
        losses[m] = log_loss(preds[m], y)
        candidates.append(Candidate(m, float(losses[m].mean()), float(np.mean((preds[m] - y) ** 2))))
    if method != "auto":
        if method not in preds:
            raise CalibrationFitError(next(c.error for c in candidates if c.method == method) or method)
        chosen, reason = method, f"asked for ({method}); held-out log-loss {losses[method].mean():.4f}"
    else:
        if not preds:
            raise CalibrationFitError("; ".join(f"{c.method}: {c.error}" for c in candidates if c.error))
        chosen, reason = _pick(losses)
    log.info("calibration choice: %s (%s)", chosen, reason)
    return Choice(chosen, reason, tuple(candidates), preds[chosen], len(splits))


def _pick(losses: dict[str, np.ndarray]) -> tuple[str, str]:
    best = min(losses, key=lambda m: losses[m].mean())
    others = ", ".join(f"{m} {losses[m].mean():.4f}" for m in losses if m != best)
    for m in METHODS:  # simplest first
        if m not in losses:
            continue
        diff = losses[m] - losses[best]
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
        if m == best:
            return m, f"lowest held-out log-loss {losses[m].mean():.4f}" + (f" ({others})" if others else "")
        if diff.mean() <= se:
            return m, (f"held-out log-loss {losses[m].mean():.4f}, within one standard error ({se:.4f}) of the "
                       f"lowest ({best} {losses[best].mean():.4f}): the simpler map wins")
    raise AssertionError("unreachable: the best method is in METHODS")
