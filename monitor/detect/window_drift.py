"""Evidently drift test on probe-score distributions: reference window vs the current window.

Uses Evidently 0.7's ``Report([ValueDrift(column, method, threshold)])``; evidently is imported
inside the function (it takes seconds to import). For distance methods (psi, wasserstein,
jensenshannon, kl_div, hellinger) drift means score >= threshold; for test methods (ks, chisquare,
...) it means p-value < threshold.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

__all__ = ["score_drift", "DISTANCE_METHODS"]

log = logging.getLogger(__name__)

DISTANCE_METHODS = frozenset({"psi", "wasserstein", "jensenshannon", "kl_div", "hellinger", "ed"})


def score_drift(reference: Sequence[float], current: Sequence[float], method: str = "psi",
                threshold: float = 0.2) -> dict[str, Any]:
    """Run the Evidently drift test; returns {method, threshold, score, drift, n_reference, n_current}."""
    if len(reference) < 2 or len(current) < 2:
        raise ValueError(f"drift test needs at least 2 values on each side, got {len(reference)} and {len(current)}")
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    dd = DataDefinition(numerical_columns=["score"])
    cur = Dataset.from_pandas(pd.DataFrame({"score": list(map(float, current))}), data_definition=dd)
    ref = Dataset.from_pandas(pd.DataFrame({"score": list(map(float, reference))}), data_definition=dd)
    snap = Report([ValueDrift(column="score", method=method, threshold=threshold)]).run(cur, ref)
    value = float(snap.dict()["metrics"][0]["value"])
    drift = value >= threshold if method in DISTANCE_METHODS else value < threshold
    return {"method": method, "threshold": threshold, "score": value, "drift": bool(drift),
            "n_reference": len(reference), "n_current": len(current)}
