"""Bootstrap metrics of correctness signals (probe train/compare) against scipy/sklearn references."""

import numpy as np
import pytest
from scipy.stats import pointbiserialr
from sklearn.metrics import roc_auc_score

from monitor.calibration.metrics import auroc, ece, paired_auroc_delta, point_biserial, signal_metrics


def _data(n=600, sep=1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.6
    s = rng.normal(size=n) + sep * y
    return s, y


def test_auroc_and_rpb_match_reference_implementations():
    s, y = _data()
    s[:50] = np.round(s[:50])  # ties
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert point_biserial(s, y)[0] == pytest.approx(pointbiserialr(y, s).statistic, abs=1e-12)
    m = signal_metrics(s, y, n_boot=50)  # unbounded scores (logits): rank/correlation metrics only
    assert m.auroc == auroc(s, y) and m.r_pb == pytest.approx(point_biserial(s, y)[0], abs=1e-12)


def test_signal_metrics_need_both_classes():
    with pytest.raises(ValueError, match="both correct and incorrect"):
        signal_metrics(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(ValueError, match="both correct and incorrect"):
        paired_auroc_delta(np.array([0.1, 0.2]), np.array([0.3, 0.2]), np.array([False, False]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        signal_metrics(np.array([0.1, np.nan]), np.array([True, False]))


def test_ece_zero_for_perfectly_calibrated_bins_and_large_when_overconfident():
    y = np.array([1] * 7 + [0] * 3, bool)
    assert ece(np.full(10, 0.7), y) == pytest.approx(0.0)
    assert ece(np.full(10, 0.99), y) == pytest.approx(0.29)
    # equal mass with 10 bins of one sample each: mean |0.99 - y| = (7 * 0.01 + 3 * 0.99) / 10
    assert ece(np.full(10, 0.99), y, equal_mass=True) == pytest.approx(0.304)
    assert ece(np.full(10, 0.99), y, bins=1, equal_mass=True) == pytest.approx(0.29)


def test_bootstrap_ci_covers_point_estimate_and_shrinks_with_n():
    s, y = _data(n=300)
    small = signal_metrics(s, y, n_boot=400)
    s2, y2 = _data(n=3000, seed=1)
    big = signal_metrics(s2, y2, n_boot=400)
    assert small.auroc_ci[0] < small.auroc < small.auroc_ci[1]
    assert small.r_pb_ci[0] < small.r_pb < small.r_pb_ci[1]
    assert (big.auroc_ci[1] - big.auroc_ci[0]) < (small.auroc_ci[1] - small.auroc_ci[0])


def test_paired_delta_detects_a_better_signal_and_not_a_copy():
    rng = np.random.default_rng(3)
    y = rng.random(1000) < 0.5
    strong = rng.normal(size=1000) + 1.5 * y
    weak = strong + rng.normal(scale=2.0, size=1000)
    d, (lo, hi) = paired_auroc_delta(strong, weak, y, n_boot=500)
    assert d > 0 and lo > 0
    d0, (lo0, hi0) = paired_auroc_delta(strong, strong, y, n_boot=200)
    assert d0 == 0 and lo0 == 0 and hi0 == 0
