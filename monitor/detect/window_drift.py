"""Drift test on probe-score distributions: reference window vs the current window.

``psi`` (the default) is computed here (:func:`monitor.detect.label_free.psi`) against a threshold
tuned by resampling the reference for the current window's size under the detectors' false-alarm
budget (``tuned=True``): a fixed PSI threshold fires on a fifth of stationary 100-score windows.
Other methods go through Evidently 0.7's ``Report([ValueDrift(column, method, threshold)])``
(imported inside the function: it takes seconds) with the configured threshold, untuned
(``tuned=False``): for distance methods (wasserstein, jensenshannon, kl_div, hellinger) drift means
score >= threshold; for test methods (ks, chisquare, ...) p-value < threshold.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

__all__ = ["score_drift", "DISTANCE_METHODS"]

log = logging.getLogger(__name__)

DISTANCE_METHODS = frozenset({"psi", "wasserstein", "jensenshannon", "kl_div", "hellinger", "ed"})


def score_drift(reference: Sequence[float], current: Sequence[float], method: str = "psi",
                threshold: float = 0.2, *, target: float = 0.05, horizon: int = 20_000) -> dict[str, Any]:
    """Run the drift test; returns {method, threshold, tuned, score, drift, n_reference, n_current}.

    For ``psi`` the threshold is tuned for ``len(current)`` (``threshold`` is then not used)."""
    if len(reference) < 2 or len(current) < 2:
        raise ValueError(f"drift test needs at least 2 values on each side, got {len(reference)} and {len(current)}")
    if method == "psi":
        from monitor.detect.label_free import psi, psi_threshold

        tuned = psi_threshold(reference, len(current), target=target, horizon=horizon)
        value = psi(reference, current)
        return {"method": method, "threshold": tuned, "tuned": True, "score": value, "drift": bool(value > tuned),
                "n_reference": len(reference), "n_current": len(current)}
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    dd = DataDefinition(numerical_columns=["score"])
    cur = Dataset.from_pandas(pd.DataFrame({"score": list(map(float, current))}), data_definition=dd)
    ref = Dataset.from_pandas(pd.DataFrame({"score": list(map(float, reference))}), data_definition=dd)
    snap = Report([ValueDrift(column="score", method=method, threshold=threshold)]).run(cur, ref)
    value = float(snap.dict()["metrics"][0]["value"])
    drift = value >= threshold if method in DISTANCE_METHODS else value < threshold
    return {"method": method, "threshold": threshold, "tuned": False, "score": value, "drift": bool(drift),
            "n_reference": len(reference), "n_current": len(current)}
