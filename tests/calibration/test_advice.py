"""recalibration_advice: recalibrate while ranking holds, retrain when AUROC fell beyond noise."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.calibration.advice import DEFAULT_MAX_AUROC_DROP, recalibration_advice
from monitor.calibration.metrics import window_metrics
from monitor.config import Settings


def _binormal(n: int, d_prime: float, seed: int) -> dict:
    """Window metrics of a probe whose scores separate the classes by ``d_prime`` sds."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.7
    z = rng.normal(size=n) + d_prime * y
    return window_metrics(1 / (1 + np.exp(-z)), y, bootstrap=500, rng=rng)


def test_the_default_matches_the_config_key():
    assert Settings().recalibration.max_auroc_drop == DEFAULT_MAX_AUROC_DROP


def test_ranking_that_holds_gets_recalibrate():
    ref, cur = _binormal(1000, 1.6, 0), _binormal(300, 1.6, 1)
    a = recalibration_advice(ref, cur, model="llava")
    assert a.action == "recalibrate" and abs(a.auroc_drop) < DEFAULT_MAX_AUROC_DROP
    assert a.auroc_drop_ci[0] < a.auroc_drop < a.auroc_drop_ci[1]
    assert "recalibrate with `vlmwatch probe recalibrate --model llava`" in a.text
    assert a.as_dict()["text"] == a.text


def test_a_drop_beyond_the_limit_and_beyond_noise_gets_retrain():
    ref, cur = _binormal(1000, 1.6, 0), _binormal(1000, 0.3, 2)  # AUROC ~0.87 -> ~0.58
    a = recalibration_advice(ref, cur)
    assert a.action == "retrain" and a.certain
    assert a.auroc_drop > 0.2 and a.auroc_drop_ci[0] > DEFAULT_MAX_AUROC_DROP
    assert "ranking broke" in a.text and "vlmwatch probe train" in a.text


def test_the_same_drop_on_too_few_labels_is_not_called():
    """CI-aware: a point drop past the limit that noise can explain does not say retrain."""
    ref = {"auroc": 0.85, "auroc_ci": [0.83, 0.87]}
    small = {"auroc": 0.78, "auroc_ci": [0.66, 0.90]}  # ~60 labels
    large = {"auroc": 0.78, "auroc_ci": [0.75, 0.81]}  # ~1,000 labels
    a = recalibration_advice(ref, small)
    assert a.action == "recalibrate" and not a.certain and "not yet beyond noise" in a.reason
    assert recalibration_advice(ref, large).action == "retrain"
    # a tolerance wider than the drop: recalibrate even on many labels
    assert recalibration_advice(ref, large, max_auroc_drop=0.10).action == "recalibrate"


def test_missing_figures_and_hanley_mcneil_fallback():
    a = recalibration_advice(None, {"auroc": 0.8, "auroc_ci": [0.7, 0.9]})
    assert a.action == "recalibrate" and "no reference AUROC" in a.reason and a.auroc_drop is None
    assert recalibration_advice({"auroc": 0.9}, {"auroc": None}).reason.startswith("no current AUROC")
    # no bootstrap CI: the interval comes from n and n_pos
    a = recalibration_advice({"auroc": 0.90}, {"auroc": 0.70, "n": 2000, "n_pos": 1000})
    assert a.action == "retrain" and a.current_auroc_ci is not None
    with pytest.raises(ValueError, match="max_auroc_drop"):
        recalibration_advice({"auroc": 0.9}, {"auroc": 0.8}, max_auroc_drop=-0.1)
