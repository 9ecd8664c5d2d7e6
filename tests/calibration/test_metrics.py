"""Calibration metrics against independent references (scikit-learn, scipy, closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import brier_score_loss, roc_auc_score

from monitor.calibration import metrics as M
from monitor.detect.synthetic import BinormalProbe


@pytest.fixture
def data():
    st = BinormalProbe().sample(1, 2000, np.random.default_rng(3))
    return st.scores[0], st.correct[0].astype(float)


def test_auroc_brier_rpb_match_references(data):
    s, y = data
    assert M.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.auroc(s, y) == pytest.approx(0.90, abs=0.03)  # the binormal probe's AUROC
    assert M.brier(s, y) == pytest.approx(brier_score_loss(y, s), abs=1e-12)
    r, lo, hi = M.point_biserial(s, y)
    assert r == pytest.approx(stats.pointbiserialr(y, s).statistic, abs=1e-12)
    assert lo < r < hi


def test_auroc_ties_and_one_class():
    assert M.auroc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    assert math.isnan(M.auroc([0.2, 0.9], [1, 1]))


def test_ece_known_values():
    # perfectly calibrated within bins -> 0; constant 0.9 on 50% correct -> 0.4
    s = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert M.ece(s, y, bins=2) == pytest.approx(0.0)
    assert M.ece(np.full(10, 0.9), np.array([1, 0] * 5), bins=10) == pytest.approx(0.4)
    assert M.ece(np.full(10, 0.9), np.array([1, 0] * 5), bins=2, equal_mass=True) == pytest.approx(0.4)


def test_calibrated_probe_has_small_ece_and_miscalibrated_large(data):
    s, y = data
    assert M.ece(s, y) < 0.04 and M.ece(s, y, equal_mass=True) < 0.04
    under = s * 0.7  # under-confident probe: ~25 points below its accuracy
    assert M.ece(under, y) > 0.15 and M.ece(under, y, equal_mass=True) > 0.15


def test_hanley_mcneil_agrees_with_bootstrap(data):
    s, y = data
    s, y = s[:400], y[:400]
    m = M.window_metrics(s, y, bootstrap=400, rng=np.random.default_rng(0))
    hm_half = (m["auroc_ci_hm"][1] - m["auroc_ci_hm"][0]) / 2
    bs_half = (m["auroc_ci"][1] - m["auroc_ci"][0]) / 2
    assert 0.5 < hm_half / bs_half < 2.0
    assert hm_half > 0.02  # a few hundred labels: far too wide to alert on AUROC alone
    lo, hi = M.auroc_hanley_mcneil(0.90, 8600, 1400)
    assert (hi - lo) / 2 < 0.01


def test_window_metrics_cis_cover_and_are_reproducible(data):
    s, y = data
    a = M.window_metrics(s[:500], y[:500], bootstrap=300, rng=np.random.default_rng(1))
    b = M.window_metrics(s[:500], y[:500], bootstrap=300, rng=np.random.default_rng(1))
    assert a == b
    for key in ("auroc", "ece_width", "ece_mass", "brier", "est_accuracy"):
        lo, hi = a[f"{key}_ci"]
        assert lo <= a[key] <= hi, key
    assert a["auroc_ci_hm"][0] < a["auroc"] < a["auroc_ci_hm"][1]
    # label-free estimate: mean calibrated score tracks the true accuracy (86%)
    assert a["est_accuracy_ci"][0] - 0.03 < 0.86 < a["est_accuracy_ci"][1] + 0.03
    assert a["agreement"] == pytest.approx(np.mean((s[:500] >= 0.5) == (y[:500] == 1)))
    assert a["n"] == 500 and a["n_pos"] == int(y[:500].sum())


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="differ in length"):
        M.auroc([0.1, 0.2], [1])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        M.brier([1.5], [1])
    with pytest.raises(ValueError, match="0/1"):
        M.ece([0.5], [2])


def test_weighted_metrics_match_references_and_unit_weights_change_nothing():
    rng = np.random.default_rng(7)
    s = np.round(rng.random(300), 2)  # rounded: ties
    y = (rng.random(300) < s).astype(float)
    w = rng.integers(1, 5, 300).astype(float)
    m = M.window_metrics(s, y, bootstrap=50, weights=w)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, s, sample_weight=w), abs=1e-12)
    # an integer weight is that many copies of the row (equal-width ECE, means)
    rs, ry = np.repeat(s, w.astype(int)), np.repeat(y, w.astype(int))
    copies = M.window_metrics(rs, ry, bootstrap=0)
    for key in ("ece_width", "agreement", "accuracy", "mean_score"):
        assert m[key] == pytest.approx(copies[key], abs=1e-12), key
    assert m["weighted"] and m["n"] == 300 and m["n_eff"] < 300
    plain = M.window_metrics(s, y, bootstrap=50)
    unit = M.window_metrics(s, y, bootstrap=50, weights=np.ones(300))
    for key, value in plain.items():
        if key not in ("weighted", "n_eff"):
            assert unit[key] == pytest.approx(value, abs=1e-12), key
    with pytest.raises(ValueError, match="weights must be finite and > 0"):
        M.window_metrics(s, y, weights=np.zeros(300))
    with pytest.raises(ValueError, match="weights and scores differ in length"):
        M.window_metrics(s, y, weights=np.ones(3))
