"""Window-vs-reference tests on input features, and their thresholds tuned on the reference.

Per window of ``inputs.window`` scored samples:

* each numeric feature: Evidently's K-S test (``ks``) against the reference values;
* each categorical feature (image format, prompt template id, task): Evidently's chi-square test
  (``chisquare``) on the categories the reference has seen, plus the share of the window in
  categories the reference never saw (``new_share``; flagged from ``inputs.min_new_category_share``);
* the vision embedding (PCA to ``inputs.embedding_dims`` fitted on the reference): MMD² with an
  RBF kernel (median-distance bandwidth) against a fixed subset of the reference.

Thresholds, never library defaults: tumbling windows make ``K = detect.horizon / window`` tests
per horizon, so the per-window false-alarm budget is ``q = 1 - (1 - target)^(1/K)``, split in half
between the feature family and the embedding. ``simulations`` permuted windows (a random window
of the reference tested against the rest of it) give the null distribution of the smallest
feature p-value; the share of them below 0.05 measures the family's *effective number of tests*
``m`` (discrete features and correlated ones count for less than one), and the p-value threshold
is ``(q/2) / m``. For the embedding, permuted windows give the null MMD², whose tail is the gamma
distribution fitted to them by moments (Gretton et al.'s gamma approximation); the threshold is
its ``1 - q/2`` quantile.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from monitor.inputs.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES

__all__ = ["FeatureTable", "fit_reference", "test_window", "MMD_REFERENCE"]

log = logging.getLogger(__name__)

MMD_REFERENCE = 400  # reference embeddings the window's MMD is computed against (at most half the reference)
_MIN_VALUES = 10  # fewer values of a feature on either side: that feature is not tested
_NOMINAL = 0.05  # the level at which the effective number of tests is measured


@dataclass
class FeatureTable:
    """Feature rows as columns: ``numeric[name]`` float arrays (NaN = absent), ``categorical[name]``
    string arrays, ``embedding`` [n, 64] float32 or None when some row has none."""

    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    embedding: np.ndarray | None

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[dict[str, Any], np.ndarray | None]]) -> "FeatureTable":
        numeric = {f: np.array([_num(r[0].get(f)) for r in rows], dtype=np.float64) for f in NUMERIC_FEATURES}
        categorical = {f: np.array([str(r[0].get(f, "none")) for r in rows], dtype=object) for f in CATEGORICAL_FEATURES}
        embs = [r[1] for r in rows]
        emb = np.stack(embs).astype(np.float32) if embs and all(e is not None for e in embs) else None
        return cls(numeric, categorical, emb)

    def __len__(self) -> int:
        return len(next(iter(self.categorical.values())))

    def take(self, idx: np.ndarray) -> "FeatureTable":
        return FeatureTable({k: v[idx] for k, v in self.numeric.items()}, {k: v[idx] for k, v in self.categorical.items()},
                            None if self.embedding is None else self.embedding[idx])


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


_IMPORT_LOCK = threading.Lock()


def _evidently_tests() -> tuple[Any, Any, Any]:
    # imported on first use (seconds), by one thread at a time: two threads importing evidently at
    # once can see its modules half-initialised (circular imports inside evidently and sklearn)
    with _IMPORT_LOCK:
        from evidently.legacy.calculations.stattests import chi_stat_test, ks_stat_test
        from evidently.legacy.core import ColumnType

    return ks_stat_test, chi_stat_test, ColumnType


def _column_pvalues(ref: FeatureTable, cur: FeatureTable, known: dict[str, list[str]],
                    effects: bool = True) -> dict[str, dict[str, Any]]:
    """Evidently p-value (and new-category share) of every testable feature of ``cur`` vs ``ref``;
    ``effects``: also the category shares and total variation (not needed by the null simulation)."""
    import pandas as pd

    ks, chi, ctype = _evidently_tests()
    out: dict[str, dict[str, Any]] = {}
    for f, rv in ref.numeric.items():
        r, c = rv[~np.isnan(rv)], cur.numeric[f][~np.isnan(cur.numeric[f])]
        if r.size < _MIN_VALUES or c.size < _MIN_VALUES:
            continue
        p = float(ks(pd.Series(r), pd.Series(c), ctype.Numerical, None).drift_score)
        sd = float(r.std()) or 1.0
        out[f] = {"kind": "numeric", "test": "ks", "p_value": p, "reference_median": float(np.median(r)),
                  "window_median": float(np.median(c)), "effect": float((c.mean() - r.mean()) / sd)}
    for f, rv in ref.categorical.items():
        seen = set(known.get(f, ()))
        cv = cur.categorical[f]
        is_new = np.array([v not in seen for v in cv], dtype=bool)
        entry: dict[str, Any] = {"kind": "categorical", "test": "chisquare", "p_value": None,
                                 "new_share": float(is_new.mean()) if cv.size else 0.0,
                                 "new_categories": sorted(set(cv[is_new].tolist()))[:10]}
        old = cv[~is_new]
        rs, cs = pd.Series(rv), pd.Series(old)
        if len(seen) >= 2 and old.size >= _MIN_VALUES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                p = float(chi(rs, cs, ctype.Categorical, None).drift_score)
            entry["p_value"] = p if math.isfinite(p) else None
        out[f] = entry
        if not effects:
            continue
        r_share = rs.value_counts(normalize=True)
        c_share = pd.Series(cv).value_counts(normalize=True)
        keys = set(r_share.index) | set(c_share.index)
        entry["effect"] = 0.5 * float(sum(abs(r_share.get(k, 0.0) - c_share.get(k, 0.0)) for k in keys))  # total variation
        entry["reference_shares"] = {str(k): round(float(v), 4) for k, v in r_share.head(5).items()}
        entry["window_shares"] = {str(k): round(float(v), 4) for k, v in c_share.head(5).items()}
    return out


def _min_p(cols: dict[str, dict[str, Any]]) -> float:
    ps = [c["p_value"] for c in cols.values() if c.get("p_value") is not None]
    return min(ps) if ps else 1.0


def _pca(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[: min(dims, vt.shape[0])]


def _mmd2(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    """Unbiased MMD² with the RBF kernel exp(-gamma |a - b|²)."""
    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return np.exp(-gamma * np.maximum(d, 0.0))

    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def fit_reference(ref: FeatureTable, *, window: int, horizon: int, target: float, simulations: int,
                  embedding_dims: int, min_new_share: float, seed: int = 0) -> dict[str, Any]:
    """Reference statistics: category sets, thresholds tuned by permutation, PCA and MMD null. JSON-ready."""
    n = len(ref)
    if n < 2 * window:
        raise ValueError(f"an input reference needs at least 2 windows ({2 * window}) of samples, got {n}")
    rng = np.random.default_rng(seed)
    windows_per_horizon = max(1, horizon // window)
    q = 1.0 - (1.0 - target) ** (1.0 / windows_per_horizon)
    known = {f: sorted(set(v.tolist())) for f, v in ref.categorical.items()}
    null_minp, null_new = [], []
    for _ in range(simulations):
        perm = rng.permutation(n)
        cols = _column_pvalues(ref.take(perm[window:]), ref.take(perm[:window]),
                               {f: sorted(set(ref.categorical[f][perm[window:]].tolist())) for f in known}, effects=False)
        null_minp.append(_min_p(cols))
        null_new.append(max((c.get("new_share", 0.0) for c in cols.values()), default=0.0))
    null_minp_a = np.asarray(null_minp)
    effective_tests = max(1.0, float(np.mean(null_minp_a < _NOMINAL)) / _NOMINAL)
    stats: dict[str, Any] = {
        "n": n, "window": window, "horizon": horizon, "target_false_alarm_rate": target, "simulations": simulations,
        "windows_per_horizon": windows_per_horizon, "per_window_rate": q, "known_categories": known,
        "effective_tests": effective_tests, "p_threshold": (q / 2.0) / effective_tests,
        "null_min_p_quantiles": [float(x) for x in np.quantile(null_minp_a, [0.01, 0.05, 0.5])],
        "new_share_threshold": max(min_new_share, float(np.max(null_new)) if null_new else 0.0),
        "embedding": None,
    }
    m_ref = min(MMD_REFERENCE, n // 2)
    if ref.embedding is not None and n - m_ref >= window:
        mean, comps = _pca(ref.embedding, embedding_dims)
        z = (ref.embedding - mean) @ comps.T
        sub = rng.choice(n, size=min(n, 500), replace=False)
        d = np.sqrt(np.maximum(((z[sub, None, :] - z[None, sub, :]) ** 2).sum(-1), 0.0))
        med = float(np.median(d[d > 0])) if np.any(d > 0) else 1.0
        gamma = 1.0 / (2.0 * med * med)
        ref_idx = rng.choice(n, size=m_ref, replace=False)
        rest = np.setdiff1d(np.arange(n), ref_idx)
        null = np.array([_mmd2(z[ref_idx], z[rng.choice(rest, size=window, replace=False)], gamma)
                         for _ in range(simulations)])
        from scipy.stats import gamma as gamma_dist

        shift = float(null.min()) - 1e-12  # MMD² (unbiased) can be negative: fit the gamma above the smallest
        mu, var = float((null - shift).mean()), float(null.var()) or 1e-12
        threshold = shift + float(gamma_dist.ppf(1.0 - q / 2.0, a=mu * mu / var, scale=var / mu))
        stats["embedding"] = {"dims": int(comps.shape[0]), "mean": mean.round(5).tolist(), "components": comps.round(5).tolist(),
                              "gamma": gamma, "reference_rows": ref_idx.tolist(), "mmd2_threshold": threshold,
                              "null_mmd2_quantiles": [float(x) for x in np.quantile(null, [0.5, 0.95, 0.99])]}
    return stats


def test_window(ref: FeatureTable, cur: FeatureTable, stats: dict[str, Any]) -> dict[str, Any]:
    """Test one window against the reference with the tuned thresholds. JSON-ready result:
    ``drift`` (bool), ``moved`` (names, strongest first), ``features`` (per-feature tests), ``embedding``."""
    cols = _column_pvalues(ref, cur, stats["known_categories"])
    pt, nt = float(stats["p_threshold"]), float(stats["new_share_threshold"])
    moved: list[tuple[float, str]] = []
    for name, c in cols.items():
        p = c.get("p_value")
        c["drift"] = bool((p is not None and p < pt) or c.get("new_share", 0.0) >= nt)
        if c["drift"]:
            moved.append((p if p is not None else 0.0, name))
    emb_stats, emb = stats.get("embedding"), None
    if emb_stats is not None and ref.embedding is not None and cur.embedding is not None:
        mean, comps = np.asarray(emb_stats["mean"]), np.asarray(emb_stats["components"])
        zr = (ref.embedding[np.asarray(emb_stats["reference_rows"])] - mean) @ comps.T
        zc = (cur.embedding - mean) @ comps.T
        mmd = _mmd2(zr, zc, float(emb_stats["gamma"]))
        emb = {"mmd2": mmd, "threshold": float(emb_stats["mmd2_threshold"]), "drift": bool(mmd > emb_stats["mmd2_threshold"]),
               "effect": mmd / max(float(emb_stats["mmd2_threshold"]), 1e-12)}
        if emb["drift"]:
            moved.append((-1.0, "vision_embedding"))
    moved.sort()
    return {"n": len(cur), "drift": bool(moved), "moved": [m for _, m in moved], "min_p": _min_p(cols),
            "p_threshold": pt, "new_share_threshold": nt, "features": cols, "embedding": emb}
