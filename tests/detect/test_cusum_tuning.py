"""Detector building blocks: streaming CUSUM equals the vectorised form; tuning hits its target."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.detect.cusum import BernoulliCusum, TwoSidedCusum, bernoulli_increments, cusum_first_alarm
from monitor.detect.synthetic import BinormalProbe
from monitor.detect.tuning import tune_bernoulli_cusum, tune_residual_cusum


def test_streaming_matches_vectorised_and_round_trips_state():
    rng = np.random.default_rng(0)
    bits = rng.random(3000) < np.r_[np.full(1500, 0.1), np.full(1500, 0.2)]
    det = BernoulliCusum(p0=0.1, p1=0.16, h=8.0)
    first = None
    for i, b in enumerate(bits):
        if i == 1000:  # persist and restore mid-stream
            det = BernoulliCusum.from_state(det.to_state())
        if det.update(bool(b)) and first is None:
            first = i
    a, c = bernoulli_increments(0.1, 0.16)
    assert first == int(cusum_first_alarm(np.where(bits, a, c)[None, :], 8.0)[0])
    assert first > 1500 and det.firing and det.s <= 2 * det.h


def test_cusum_clears_after_drift_ends():
    det = BernoulliCusum(p0=0.1, p1=0.16, h=8.0)
    for _ in range(2000):
        det.update(True)
    assert det.firing and det.s == pytest.approx(16.0)
    n = 0
    while det.firing:
        det.update(False)
        n += 1
    assert n < 200  # capped statistic: recovery is bounded


def test_two_sided_detects_both_directions():
    for shift in (+0.3, -0.3):
        det = TwoSidedCusum(mean=0.0, sd=1.0, k=0.125, h=10.0)
        rng = np.random.default_rng(1)
        fired = [det.update(float(v)) for v in rng.normal(shift, 1.0, 2000)]
        assert any(fired)


def test_tuning_reaches_target_false_alarm_rate():
    probe = BinormalProbe()
    rng = np.random.default_rng(5)
    t = tune_bernoulli_cusum(0, None, p0=probe.disagreement(), target=0.05, horizon=20_000, simulations=1000, rng=rng)
    assert t.simulated_false_alarm_rate <= 0.08
    # independent in-control streams from the binormal probe
    st = probe.sample(300, 20_000, rng)
    a, b = bernoulli_increments(t.p0, t.p1)
    far = np.mean(cusum_first_alarm(np.where(st.disagree, a, b), t.h) >= 0)
    assert far <= 0.09
    # a looser target gives a lower threshold
    loose = tune_bernoulli_cusum(0, None, p0=probe.disagreement(), target=0.5, horizon=20_000, simulations=400, rng=rng)
    assert loose.h < t.h


def test_estimated_reference_raises_threshold():
    rng = np.random.default_rng(2)
    known = tune_bernoulli_cusum(0, None, p0=0.1, simulations=600, rng=rng)
    est = tune_bernoulli_cusum(100, 1000, simulations=600, rng=rng)
    assert est.h > known.h  # uncertainty about p0 costs threshold (fewer false alarms when p0 is low)


def test_residual_tuning_and_bad_input():
    rng = np.random.default_rng(3)
    st = BinormalProbe().sample(1, 5000, rng)
    t = tune_residual_cusum(st.residual[0], horizon=5000, simulations=300, rng=rng)
    assert t.h > 0 and abs(t.mean) < 0.05
    with pytest.raises(ValueError, match="at least 30"):
        tune_residual_cusum([0.1] * 5)
    with pytest.raises(ValueError, match="no room"):
        tune_bernoulli_cusum(0, None, p0=0.7, shift=1.6)
