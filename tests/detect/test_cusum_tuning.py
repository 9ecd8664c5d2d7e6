"""Detector building blocks: the vectorised CUSUM equals its recursion; tuning hits its target."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.detect.cusum import bernoulli_increments, cusum_first_alarm, cusum_max
from monitor.detect.synthetic import BinormalProbe
from monitor.detect.tuning import tune_bernoulli_cusum, tune_residual_cusum


def test_vectorised_cusum_equals_the_recursion():
    rng = np.random.default_rng(0)
    bits = rng.random(3000) < np.r_[np.full(1500, 0.1), np.full(1500, 0.2)]
    a, c = bernoulli_increments(0.1, 0.16)
    stat, first = 0.0, -1
    for i, b in enumerate(bits):  # S_t = max(0, S_{t-1} + increment)
        stat = max(0.0, stat + (a if b else c))
        if stat > 8.0 and first < 0:
            first = i
    inc = np.where(bits, a, c)[None, :]
    assert first > 1500 and first == int(cusum_first_alarm(inc, 8.0)[0])
    mx, _ = cusum_max(inc[:, :2000])
    mx, _ = cusum_max(inc[:, 2000:], _)  # in chunks, carried over
    assert mx[0] == pytest.approx(cusum_max(inc)[0][0])


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
