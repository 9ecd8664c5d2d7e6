"""The input-drift false-alarm rate over simulated stationary horizons, at a small size: thresholds
fitted by :func:`monitor.inputs.drift.fit_reference` on one sample of a stationary stream, horizons
of windows resampled from a *held-out* sample of the same stream, the production ``test_window``
and the confirm-windows rule (:mod:`monitor.inputs.horizon`)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import binom

from monitor.inputs.drift import FeatureTable, fit_reference
from monitor.inputs.horizon import horizon_alarm_probability, simulate_horizons

WINDOW, HORIZON, TARGET, CONFIRM = 40, 400, 0.05, 2  # 10 windows per horizon
HORIZONS = 15
# Alarmed horizons allowed out of HORIZONS: with a false-alarm rate at the target, more than this
# happens with probability < 1% (Binomial(15, 0.05) >= 4: 0.55%); at a rate of 0.4 the bound still
# passes only 9% of the time, so a detector far over target fails.
MAX_ALARMS = int(binom.ppf(0.99, HORIZONS, TARGET))


def _rows(n: int, rng: np.random.Generator) -> list[tuple[dict, np.ndarray]]:
    """Stationary traffic shaped like the recorded features: constant sizes, continuous pixel
    statistics, discrete token counts, a few templates, and a vision embedding."""
    out = []
    for _ in range(n):
        f = {"width": 336, "height": 336, "aspect_ratio": 1.0, "format": "PNG", "task": "pope",
             "byte_size": rng.normal(5e4, 5e3), "brightness_mean": rng.normal(120, 10), "brightness_std": rng.normal(40, 5),
             "colourfulness": rng.gamma(4.0, 5.0), "sharpness": rng.lognormal(5.0, 0.5),
             "prompt_tokens": int(rng.integers(8, 12)), "answer_tokens": int(rng.integers(1, 3)),
             "template": str(rng.choice(["t1", "t2", "t3"], p=[0.6, 0.3, 0.1]))}
        out.append((f, rng.normal(size=16).astype(np.float32)))
    return out


@pytest.fixture(scope="module")
def fitted() -> tuple[FeatureTable, FeatureTable, dict]:
    rng = np.random.default_rng(3)
    ref = FeatureTable.from_rows(_rows(400, rng))
    stats = fit_reference(ref, window=WINDOW, horizon=HORIZON, target=TARGET, simulations=60, embedding_dims=8,
                          min_new_share=0.05, seed=3)
    pool = FeatureTable.from_rows(_rows(600, rng))  # held out: never seen by the fit
    return ref, pool, stats


def test_fitted_thresholds_keep_the_horizon_false_alarm_rate_at_target(fitted) -> None:
    ref, pool, stats = fitted
    sim = simulate_horizons(ref, pool, stats, horizons=HORIZONS, confirm=CONFIRM, rng=np.random.default_rng(0))
    s = sim.summary(TARGET)
    assert s["horizons"] == HORIZONS and s["windows_tested"] == HORIZONS * HORIZON // WINDOW
    assert s["horizons_with_alarm"] <= MAX_ALARMS, s
    assert s["false_alarm_rate_from_window_rate_ci"][0] <= TARGET, s  # the per-window rate is not clearly over budget


def test_a_mis_tuned_threshold_is_caught_by_the_simulation(fitted) -> None:
    ref, pool, stats = fitted
    loose = {**stats, "p_threshold": 0.05}  # a library-default level per feature, not tuned to the horizon
    s = simulate_horizons(ref, pool, loose, horizons=HORIZONS, confirm=CONFIRM, rng=np.random.default_rng(0)).summary(TARGET)
    assert s["horizons_with_alarm"] > MAX_ALARMS, s
    assert s["false_alarm_rate_ci"][0] > TARGET, s


@pytest.mark.parametrize("p", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("windows,confirm", [(1, 1), (4, 2), (6, 3), (5, 1)])
def test_horizon_alarm_probability_matches_enumeration(p: float, windows: int, confirm: int) -> None:
    exact = 0.0
    for seq in itertools.product((0, 1), repeat=windows):
        run = best = 0
        for d in seq:
            run = run + 1 if d else 0
            best = max(best, run)
        if best >= confirm:
            exact += p ** sum(seq) * (1 - p) ** (windows - sum(seq))
    assert horizon_alarm_probability(p, windows, confirm) == pytest.approx(exact, abs=1e-12)
