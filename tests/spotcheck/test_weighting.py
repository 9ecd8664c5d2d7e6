"""Weighted spot-check windows are unbiased for the whole window; the plain mean of checks is not."""

from __future__ import annotations

from monitor.spotcheck.simulation import simulate_windows


def test_weighted_window_estimates_are_unbiased_and_unweighted_are_not():
    res = simulate_windows(200, population=2000, bootstrap=0, seed=3, metrics=("agreement", "accuracy", "brier", "auroc"))
    assert 180 < res["setup"]["mean_checks_per_window"] < 220  # rate 0.1 of 2,000
    for metric, st in res["weighted"].items():
        lo, hi = st["bias_ci"]
        assert lo <= 0.0 <= hi, (metric, st)  # mean error within its CI
    for metric, st in res["unweighted"].items():
        lo, hi = st["bias_ci"]
        assert not lo <= 0.0 <= hi, (metric, st)
        assert abs(st["bias"]) > 0.05, (metric, st)  # boundary oversampling: far off
    # the window's own 95% interval (Wilson at the effective size) holds the truth about 95% of the time
    assert 0.9 <= res["weighted"]["agreement"]["coverage"] <= 0.99
    assert res["unweighted"]["agreement"]["coverage"] < 0.1
