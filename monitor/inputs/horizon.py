"""The input-drift false-alarm rate over a horizon, by simulation through the production test path.

A simulated horizon is ``detect.horizon / inputs.window`` tumbling windows, each drawn by
resampling (with replacement) rows of a stationary *held-out* pool (rows the reference was not
fitted on), tested by :func:`monitor.inputs.drift.test_window` with the reference's fitted
thresholds, and alarmed as the inputs job alarms: ``inputs.confirm_windows`` drifted windows in a
row. The false-alarm rate is the share of horizons with at least one alarm (Wilson 95% CI).

Windows are independent given the reference (tumbling windows of a stationary stream), so the
per-window drift rate ``p`` also gives the horizon rate exactly: ``horizon_alarm_probability``
(the chance of ``confirm`` drifted windows in a row among ``K``); its CI from the binomial CI of
``p`` over every simulated window is much tighter than the one over horizons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from monitor.inputs.drift import FeatureTable, test_window

__all__ = ["HorizonSimulation", "simulate_horizons", "horizon_alarm_probability"]


@dataclass
class HorizonSimulation:
    windows_per_horizon: int
    confirm_windows: int
    alarms: list[bool] = field(default_factory=list)  # per horizon: an input_drift alarm fired
    windows: int = 0  # windows tested over all horizons
    drifted: int = 0  # of them drifted

    def merge(self, other: "HorizonSimulation") -> "HorizonSimulation":
        return HorizonSimulation(self.windows_per_horizon, self.confirm_windows, self.alarms + other.alarms,
                                 self.windows + other.windows, self.drifted + other.drifted)

    def summary(self, target: float) -> dict[str, object]:
        from monitor.calibration.metrics import wilson_interval

        h, k = len(self.alarms), int(sum(self.alarms))
        p_lo, p_hi = wilson_interval(self.drifted, self.windows)
        exact = [horizon_alarm_probability(p, self.windows_per_horizon, self.confirm_windows)
                 for p in (self.drifted / self.windows, p_lo, p_hi)]
        return {"horizons": h, "horizons_with_alarm": k, "false_alarm_rate": k / h,
                "false_alarm_rate_ci": list(wilson_interval(k, h)), "target": target,
                "windows_per_horizon": self.windows_per_horizon, "confirm_windows": self.confirm_windows,
                "windows_tested": self.windows, "windows_drifted": self.drifted,
                "per_window_drift_rate": self.drifted / self.windows, "per_window_drift_rate_ci": [p_lo, p_hi],
                "false_alarm_rate_from_window_rate": exact[0], "false_alarm_rate_from_window_rate_ci": exact[1:]}


def horizon_alarm_probability(p: float, windows: int, confirm: int) -> float:
    """P(at least ``confirm`` drifted windows in a row among ``windows`` independent ones, each drifted with ``p``)."""
    state = np.zeros(confirm)  # state[j]: no alarm yet, current run of drifted windows is j
    state[0], alarmed = 1.0, 0.0
    for _ in range(windows):
        nxt = np.zeros(confirm)
        nxt[0] = state.sum() * (1.0 - p)
        nxt[1:] = state[:-1] * p
        alarmed += state[-1] * p
        state = nxt
    return float(alarmed)


def simulate_horizons(ref: FeatureTable, pool: FeatureTable, stats: dict, *, horizons: int, confirm: int,
                      rng: np.random.Generator) -> HorizonSimulation:
    """``horizons`` stationary horizons of windows resampled from ``pool`` (held out from the reference),
    tested against ``ref`` with its fitted ``stats`` (every window, also after an alarm: the
    per-window rate stays unbiased)."""
    window, k = int(stats["window"]), int(stats["windows_per_horizon"])
    sim = HorizonSimulation(k, confirm)
    for _ in range(horizons):
        run, alarm = 0, False
        for _ in range(k):
            drift = test_window(ref, pool.take(rng.integers(0, len(pool), window)), stats)["drift"]
            sim.windows += 1
            sim.drifted += drift
            run = run + 1 if drift else 0
            alarm = alarm or run >= confirm
        sim.alarms.append(alarm)
    return sim
