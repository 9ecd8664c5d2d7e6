"""Simulated spot-check windows: how far weighted and unweighted window metrics land from the truth.

Each simulated window is a fresh population of ``population`` scored samples from the binormal
probe (``monitor.detect.synthetic.BinormalProbe``: AUROC 0.90, accuracy 0.86, calibrated). The
selection policy (``monitor.spotcheck.policy``) draws spot checks with its inclusion
probabilities, oversampling scores near the threshold; each window's metrics are computed from
the checks twice, weighted by 1 / inclusion probability and unweighted, and compared with the
same metric on the whole population. A third estimator, ``uniform_control``, is a simple random
sample of as many samples as the checks, unweighted: what the metric's own small-sample
behaviour is (binned ECE is biased upwards on a few hundred rows under any design; percentile
CIs of AUROC undercover when one class has few members). Over many windows this gives, per
metric and estimator, the bias (mean error with its 95% CI) and the coverage of the window's
own 95% CI.

Used by ``bench/spotcheck_weighting.py`` (the figures) and ``tests/spotcheck`` (the property at
a small size).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from monitor.calibration.metrics import window_metrics
from monitor.detect.synthetic import BinormalProbe
from monitor.spotcheck.policy import SelectionPolicy

__all__ = ["ESTIMATORS", "METRICS", "simulate_windows"]

ESTIMATORS = ("weighted", "unweighted", "uniform_control")

# metric -> its CI key in window_metrics
METRICS = {"agreement": "agreement_ci", "accuracy": "accuracy_ci", "brier": "brier_ci", "auroc": "auroc_ci",
           "ece_mass": "ece_mass_ci"}
_Z95 = 1.959963984540054


def simulate_windows(
    windows: int,
    *,
    population: int = 2000,
    policy: SelectionPolicy | None = None,
    threshold: float = 0.5,
    bootstrap: int = 200,
    seed: int = 0,
    metrics: tuple[str, ...] = tuple(METRICS),
) -> dict[str, Any]:
    """Bias and CI coverage of weighted vs unweighted window estimates over ``windows`` windows.

    Returns ``{"weighted": {metric: stats}, "unweighted": {...}, "uniform_control": {...},
    "setup": {...}}`` where stats =
    ``bias`` (mean estimate - truth), ``bias_ci`` (95%), ``error_sd`` (one window's spread),
    ``bias_in_sd`` (bias / error_sd: how much of a window's error is bias), ``rmse``, ``coverage`` (share of windows
    whose 95% CI holds the truth; None when bootstrap=0 leaves a metric without a CI), ``windows``.
    """
    policy = policy or SelectionPolicy(rate=0.1, uniform_share=0.3, boundary_width=0.15, seconds_per_hour=1e9)
    rng = np.random.default_rng(seed)
    probe = BinormalProbe()
    err: dict[str, dict[str, list[float]]] = {k: {m: [] for m in metrics} for k in ESTIMATORS}
    hit: dict[str, dict[str, list[bool]]] = {k: {m: [] for m in metrics} for k in ESTIMATORS}
    checks = []
    for _ in range(windows):
        st = probe.sample(1, population, rng)
        s, y = st.scores[0], st.correct[0].astype(np.float64)
        truth = window_metrics(s, y, threshold=threshold, bootstrap=0)
        pi, _ = policy.probabilities(s, threshold)
        sel = rng.random(s.size) < pi
        checks.append(int(sel.sum()))
        srs = rng.choice(s.size, size=int(sel.sum()), replace=False)
        for kind, idx, w in (("weighted", sel, 1.0 / pi[sel]), ("unweighted", sel, None),
                             ("uniform_control", srs, None)):
            est = window_metrics(s[idx], y[idx], threshold=threshold, bootstrap=bootstrap, rng=rng, weights=w)
            for m in metrics:
                if est.get(m) is None or truth.get(m) is None:
                    continue
                err[kind][m].append(est[m] - truth[m])
                ci = est.get(METRICS[m])
                if ci is not None and None not in ci:
                    hit[kind][m].append(ci[0] <= truth[m] <= ci[1])
    out: dict[str, Any] = {
        "setup": {"windows": windows, "population": population, "rate": policy.rate,
                  "uniform_share": policy.uniform_share, "boundary_width": policy.boundary_width,
                  "threshold": threshold, "bootstrap": bootstrap, "seed": seed,
                  "mean_checks_per_window": float(np.mean(checks)), "probe": "binormal AUROC 0.90, accuracy 0.86"},
    }
    for kind in ESTIMATORS:
        out[kind] = {m: _stats(err[kind][m], hit[kind][m]) for m in metrics}
    return out


def _stats(errors: list[float], hits: list[bool]) -> dict[str, Any]:
    e = np.asarray(errors, dtype=np.float64)
    bias = float(e.mean())
    sd = float(e.std(ddof=1))
    half = _Z95 * sd / math.sqrt(e.size)
    return {"bias": bias, "bias_ci": [bias - half, bias + half], "error_sd": sd,
            "bias_in_sd": bias / sd if sd > 0 else None, "rmse": float(np.sqrt((e * e).mean())),
            "coverage": float(np.mean(hits)) if hits else None, "windows": int(e.size)}
