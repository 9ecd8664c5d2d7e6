"""Selection policy: rate, boundary priority, budget, unbiased Horvitz-Thompson estimates."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.spotcheck.policy import SelectionPolicy, horvitz_thompson_mean, horvitz_thompson_total

POLICY = SelectionPolicy(rate=0.1, uniform_share=0.3, boundary_width=0.15, seconds_per_hour=600.0)


def _population(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.beta(2, 2, n)
    correct = (rng.random(n) < scores).astype(float)  # correctness tracks the probe score
    return scores, correct


def test_rate_is_kept_and_the_boundary_is_preferred():
    scores, _ = _population()
    pi, pi_u = POLICY.probabilities(scores, 0.5)
    assert pi.mean() == pytest.approx(0.1, rel=1e-9)  # no clipping at this rate
    near, far = np.abs(scores - 0.5) < 0.05, np.abs(scores - 0.5) > 0.15
    assert pi[near].min() > 2 * pi[far].max()
    assert np.allclose(pi[far], 0.1 * 0.3)  # only the uniform slice beyond the boundary width
    assert np.all(pi_u <= pi) and np.all(pi > 0)


def test_draws_follow_the_recorded_probabilities():
    scores, _ = _population(400)
    rng = np.random.default_rng(1)
    hits = np.zeros(400)
    reps = 400
    for _ in range(reps):
        d = POLICY.decide(scores, 0.5, rng)
        hits += [x.selected for x in d]
        assert all(x.reason in ("boundary", "uniform") for x in d if x.selected)
    pi, _ = POLICY.probabilities(scores, 0.5)
    se = np.sqrt(pi * (1 - pi) / reps)
    assert np.all(np.abs(hits / reps - pi) < 5 * se + 1e-9)


def test_horvitz_thompson_is_unbiased_and_the_plain_mean_is_not():
    scores, correct = _population()
    truth = correct.mean()
    pi, _ = POLICY.probabilities(scores, 0.5)
    rng = np.random.default_rng(2)
    reps = 3000
    sel = rng.random((reps, scores.size)) < pi
    ht = (sel * (correct / pi)).sum(1) / scores.size
    naive = (sel * correct).sum(1) / sel.sum(1)
    se = ht.std(ddof=1) / np.sqrt(reps)
    assert abs(ht.mean() - truth) < 4 * se
    # with the boundary oversampled, the unweighted mean of checked samples is visibly off
    assert abs(naive.mean() - truth) > 10 * naive.std(ddof=1) / np.sqrt(reps)
    one = np.flatnonzero(sel[0])
    assert horvitz_thompson_mean(correct[one], pi[one], scores.size) == pytest.approx(ht[0])
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        horvitz_thompson_total([1.0], [0.0])


def test_budget_scale_and_a_spent_budget_stops_selection():
    # 3600 candidates an hour x 0.1 x 2 s = 720 s expected > 600 s budget
    s = POLICY.budget_scale(candidates_per_hour=3600, seconds_per_check=2.0, spent_last_hour=0.0)
    assert s == pytest.approx(600 / 720)
    assert POLICY.budget_scale(candidates_per_hour=100, seconds_per_check=2.0, spent_last_hour=0.0) == 1.0
    assert POLICY.budget_scale(candidates_per_hour=100, seconds_per_check=2.0, spent_last_hour=600.0) == 0.0
    scores, _ = _population(500)
    d = POLICY.decide(scores, 0.5, np.random.default_rng(3), scale=0.0)
    assert not any(x.selected for x in d) and all(x.inclusion_prob == 0.0 for x in d)
    tiny = SelectionPolicy(rate=0.1, uniform_share=0.3, boundary_width=0.15, seconds_per_hour=1e-3)
    scaled = tiny.budget_scale(candidates_per_hour=3600, seconds_per_check=1.0, spent_last_hour=0.0)
    assert 0 < scaled < 1e-5
    pi, _ = tiny.probabilities(scores, 0.5, scaled)
    assert pi.max() <= scaled * 1.0 + 1e-12


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("rate", 1.5, "spotcheck.rate"), ("boundary_width", 0.0, "boundary_width"), ("uniform_share", -0.1, "uniform_share")],
)
def test_bad_settings_are_named(field, value, message):
    kw = dict(rate=0.1, uniform_share=0.3, boundary_width=0.15, seconds_per_hour=60.0)
    kw[field] = value
    with pytest.raises(ValueError, match=message):
        SelectionPolicy(**kw)


def test_capped_probabilities_pass_their_excess_on():
    scores, _ = _population(200)
    high = SelectionPolicy(rate=0.6, uniform_share=0.3, boundary_width=0.15, seconds_per_hour=600.0)
    pi, _ = high.probabilities(scores, 0.5)
    assert pi.max() == 1.0 and pi.mean() == pytest.approx(0.6)
    allp, _ = SelectionPolicy(1.0, 0.3, 0.15, 600.0).probabilities(scores, 0.5)
    assert np.all(allp == 1.0)
