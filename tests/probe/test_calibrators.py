"""Calibration maps folded into probe heads, and the held-out choice between them."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.calibration.metrics import ece
from monitor.probe.calibrator_choice import choose_calibrator
from monitor.probe.calibrators import CalibrationFitError, fit_calibrator, logit
from monitor.probe.head import ProbeHead


def _head(table: bool) -> ProbeHead:
    rng = np.random.default_rng(0)
    head = ProbeHead(weight=rng.normal(scale=0.3, size=16), bias=0.2)
    if table:  # an isotonic table from training: monotone, with flat steps
        head = head.with_isotonic(np.array([0.0, 0.2, 0.5, 0.5001, 0.9, 1.0]), np.array([0.05, 0.1, 0.4, 0.6, 0.8, 0.95]))
    return head


@pytest.mark.parametrize("table", [False, True], ids=["linear head", "head with isotonic table"])
@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic"])
def test_folded_head_equals_the_map_applied_to_the_stored_scores(method, table):
    head = _head(table)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 16))
    stored = head.predict(x).astype(np.float32)  # what storage holds
    y = rng.random(3000) < np.clip(stored * 0.7, 0, 1)
    cal = fit_calibrator(method, logit(stored), y)
    folded = cal.fold(head)
    np.testing.assert_allclose(folded.predict(x), cal.apply(logit(stored)), atol=2e-3)
    if not table and method != "isotonic":  # affine maps stay in the ONNX graph's weights
        assert not len(folded.iso_x) and np.allclose(folded.weight, head.weight * cal.a, rtol=1e-5)
    else:
        np.testing.assert_array_equal(folded.weight, head.weight)


def test_platt_and_temperature_refuse_an_inverted_ranking():
    rng = np.random.default_rng(2)
    z = rng.normal(size=500)
    y = rng.random(500) < 1 / (1 + np.exp(2 * z))  # higher score, less often correct
    for method in ("platt", "temperature"):
        with pytest.raises(CalibrationFitError, match="no longer rank"):
            fit_calibrator(method, z, y)
    with pytest.raises(CalibrationFitError, match="both correct and incorrect"):
        fit_calibrator("platt", z, np.ones(500, bool))


def test_auto_prefers_the_simplest_map_that_is_as_good_on_held_out_folds():
    rng = np.random.default_rng(3)
    z = rng.normal(scale=3.0, size=400)
    y = rng.random(400) < 1 / (1 + np.exp(-z / 2.5))  # pure temperature: overconfident by T = 2.5
    choice = choose_calibrator(z, y)
    assert choice.method == "temperature", choice.reason
    assert choice.folds == 5 and choice.held_out.shape == (400,)
    by = {c.method: c for c in choice.candidates}
    assert by["temperature"].log_loss < by["current"].log_loss
    assert ece(choice.held_out, y) < ece(1 / (1 + np.exp(-z)), y) / 2

    y = rng.random(400) < 1 / (1 + np.exp(-(z - 2.0)))  # a constant offset: temperature cannot fix it
    assert choose_calibrator(z, y).method in ("platt", "isotonic")
    # a non-logistic distortion (a step): only isotonic follows it
    zs = rng.normal(scale=2.0, size=1500)
    ys = rng.random(1500) < np.where(zs > 0.5, 0.9, 0.2)
    assert choose_calibrator(zs, ys).method == "isotonic"


def test_a_named_method_is_used_and_a_broken_one_is_reported():
    rng = np.random.default_rng(4)
    z = rng.normal(size=300)
    y = rng.random(300) < 1 / (1 + np.exp(-z))
    assert choose_calibrator(z, y, "isotonic").method == "isotonic"
    y_inv = rng.random(300) < 1 / (1 + np.exp(3 * z))
    choice = choose_calibrator(z, y_inv)  # platt/temperature fail, isotonic still fits (flat)
    assert choice.method == "isotonic"
    assert {c.method for c in choice.candidates if c.error} == {"platt", "temperature"}
    with pytest.raises(CalibrationFitError, match="no longer rank"):
        choose_calibrator(z, y_inv, "platt")
    with pytest.raises(ValueError, match="unknown calibration method"):
        choose_calibrator(z, y, "beta")
