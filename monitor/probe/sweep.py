"""Layer x pooling sweep of logistic-regression probes, held-out selection, calibration.

Samples are split three ways (by group, e.g. image, so that questions about one image never sit
on both sides): ``train`` fits each candidate, ``select`` picks the layer, pooling and
regularisation by AUROC, ``calib`` fits the calibration (Platt, temperature or isotonic) and gives an estimate of
the chosen probe that neither fitting nor selection has seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from monitor.calibration.metrics import auroc
from monitor.probe.head import POOLINGS, ProbeHead

__all__ = ["DEFAULT_LAYER_TOLERANCE", "Splits", "make_splits", "SweepResult", "sweep", "fit_head", "calibrate_head"]

log = logging.getLogger(__name__)

DEFAULT_CS = (0.01, 0.1, 1.0)  # inverse L2 strengths tried per candidate; tiny hidden sizes like more
DEFAULT_LAYER_TOLERANCE = 0.005  # AUROC an earlier (cheaper) layer may give up; well inside a CI at n=1,000


@dataclass(frozen=True)
class Splits:
    train: np.ndarray  # sample indices
    select: np.ndarray
    calib: np.ndarray


def make_splits(
    labels: np.ndarray,
    groups: Sequence[str] | None = None,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> Splits:
    """Random train/select/calib split of whole groups; each part must hold both classes."""
    y = np.asarray(labels).astype(bool)
    n = len(y)
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"split fractions must be positive and sum to 1, got {fractions}")
    keys = np.asarray(groups if groups is not None else np.arange(n).astype(str))
    if len(keys) != n:
        raise ValueError(f"groups has {len(keys)} entries for {n} samples")
    uniq, inverse = np.unique(keys, return_inverse=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    cut1 = int(round(fractions[0] * len(uniq)))
    cut2 = cut1 + int(round(fractions[1] * len(uniq)))
    part_of_group = np.empty(len(uniq), dtype=int)
    part_of_group[order[:cut1]] = 0
    part_of_group[order[cut1:cut2]] = 1
    part_of_group[order[cut2:]] = 2
    part = part_of_group[inverse]
    out = Splits(*(np.flatnonzero(part == k) for k in range(3)))
    for name in ("train", "select", "calib"):
        idx = getattr(out, name)
        if len(idx) < 2 or y[idx].all() or not y[idx].any():
            raise ValueError(
                f"the {name} split ({len(idx)} samples) lacks correct or incorrect samples: "
                f"need more labelled data ({n} samples, {int(y.sum())} correct)"
            )
    return out


def fit_head(x: np.ndarray, y: np.ndarray, c: float, seed: int = 0) -> ProbeHead:
    """Standardise, fit L2 logistic regression, fold both into a raw-space :class:`ProbeHead`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit((x - scaler.mean_) / scale, np.asarray(y).astype(int))
    return ProbeHead.from_standardised(clf.coef_[0], clf.intercept_[0], scaler.mean_, scale)


@dataclass
class SweepResult:
    layer: int
    pooling: str
    c: float
    select_auroc: float
    head: ProbeHead  # fitted on the train split, uncalibrated
    # pooling -> per-layer best held-out AUROC (over C), in the order of ``layers``
    curves: dict[str, list[float]] = field(default_factory=dict)
    layers: list[int] = field(default_factory=list)


def sweep(
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    splits: Splits,
    layers: Sequence[int],
    cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
    layer_tolerance: float = DEFAULT_LAYER_TOLERANCE,
    progress: bool = False,
) -> SweepResult:
    """Fit a probe for every (layer, pooling, C) and pick one by AUROC on ``splits.select``.

    ``features[pooling]`` is ``[N, len(layers), H]``. The pick is the *earliest* layer with a
    candidate within ``layer_tolerance`` of the best AUROC (the scoring pass stops there, so an
    earlier layer is cheaper), and the best candidate at that layer.
    """
    y = np.asarray(labels).astype(bool)
    if not features:
        raise ValueError("no pooled features to sweep")
    if layer_tolerance < 0:
        raise ValueError(f"layer_tolerance must be >= 0, got {layer_tolerance}")
    if y[splits.select].all() or not y[splits.select].any():
        raise ValueError("AUROC needs both correct and incorrect samples in the select split")
    from threadpoolctl import threadpool_limits

    width = next(iter(features.values())).shape[-1]
    # small problems: BLAS threads only fight each other (seconds instead of milliseconds per fit
    # on a busy 2-core box); wide hidden states (7B: 4096) still get every thread
    with threadpool_limits(limits=1 if width < 1024 else None):
        return _sweep(features, y, splits, layers, cs, seed, layer_tolerance, progress)


def _sweep(features: Mapping[str, np.ndarray], y: np.ndarray, splits: Splits, layers: Sequence[int],
           cs: Sequence[float], seed: int, tolerance: float, progress: bool) -> SweepResult:
    from monitor.progress import progress as progress_bar

    bar = progress_bar(len(features) * len(layers), "layer sweep", "layer", enabled=progress)
    candidates: list[tuple[float, int, str, float, ProbeHead]] = []
    curves: dict[str, list[float]] = {}
    for pooling, feats in features.items():
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        if feats.shape[0] != len(y) or feats.shape[1] != len(layers):
            raise ValueError(f"features[{pooling}] has shape {feats.shape}, expected [{len(y)}, {len(layers)}, H]")
        curves[pooling] = []
        for j, layer in enumerate(layers):
            scores = []
            for c in cs:
                head = fit_head(feats[splits.train, j], y[splits.train], c, seed)
                score = auroc(head.logit(feats[splits.select, j]), y[splits.select])
                candidates.append((score, layer, pooling, c, head))
                scores.append(score)
            curves[pooling].append(max(scores))
            bar.update(1)
            log.info("sweep: layer %d pooling %s held-out AUROC %.4f", layer, pooling, max(scores))
    bar.close()
    top = max(c[0] for c in candidates)
    layer = min(c[1] for c in candidates if c[0] >= top - tolerance)
    score, layer, pooling, c, head = max((c for c in candidates if c[1] == layer), key=lambda c: c[0])
    log.info("sweep picked layer %d, pooling %s, C=%g (held-out AUROC %.4f; best anywhere %.4f)",
             layer, pooling, c, score, top)
    return SweepResult(layer, pooling, c, score, head, curves, list(layers))


def calibrate_head(head: ProbeHead, x: np.ndarray, y: np.ndarray, method: str = "platt") -> ProbeHead:
    """Calibrate ``head`` on held-out ``(x, y)`` (:mod:`monitor.probe.calibrators`): Platt and
    temperature fold into the weights, isotonic adds a table."""
    from monitor.probe.calibrators import fit_calibrator

    return fit_calibrator(method, head.logit(x), y, positive_slope=False).fold(head)
