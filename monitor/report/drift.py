"""Evidently (0.7.x) HTML report: score distributions, reference vs current."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["SCORE_COLUMNS", "split_reference_current", "evidently_drift"]

logger = logging.getLogger(__name__)

SCORE_COLUMNS = ("p_correct", "answer_prob", "attn_entropy", "attn_topk_mass", "sc_agreement")
MIN_ROWS = 20  # fewer rows on a side and no drift statistic is meaningful


def split_reference_current(scores: pd.DataFrame, reference_span: tuple[Any, Any] | None, reference_n: int,
                            current_n: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Reference: the stored reference window when there is one, else the first ``reference_n``
    scored samples of the period. Current: the last ``current_n`` scored samples after it."""
    s = scores.sort_values("ts")
    if reference_span is not None:
        lo, hi = (pd.Timestamp(t) for t in reference_span)
        ref = s[(s["ts"] >= lo) & (s["ts"] < hi)]
        rest = s[s["ts"] >= hi]
        how = f"stored reference window {lo.isoformat()} – {hi.isoformat()}"
    else:
        k = min(reference_n, len(s) // 2)
        ref, rest = s.iloc[:k], s.iloc[k:]
        how = f"first {k} scored samples of the period"
    return ref, rest.iloc[-current_n:], how


def evidently_drift(ref: pd.DataFrame, cur: pd.DataFrame, out: Path, method: str = "psi") -> dict[str, Any]:
    """Write the Evidently data-drift HTML for the score columns; return per-column drift values."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # vlmwatch never phones home
    cols = [c for c in SCORE_COLUMNS if c in ref and c in cur and ref[c].notna().sum() >= MIN_ROWS
            and cur[c].notna().sum() >= MIN_ROWS]
    if len(ref) < MIN_ROWS or len(cur) < MIN_ROWS or not cols:
        out.write_text("<html><body><h1>vlmwatch score drift</h1><p>Not enough scored samples for a drift "
                       f"report: reference {len(ref)}, current {len(cur)} (need {MIN_ROWS} each).</p></body></html>")
        return {"skipped": True, "reference_rows": len(ref), "current_rows": len(cur)}
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    dd = DataDefinition(numerical_columns=cols)
    report = Report([DataDriftPreset(columns=cols, method=method)],
                    metadata={"title": "vlmwatch: probe score distributions, reference vs current"})
    snap = report.run(Dataset.from_pandas(cur[cols].astype(float), data_definition=dd),
                      Dataset.from_pandas(ref[cols].astype(float), data_definition=dd))
    snap.save_html(str(out))
    result: dict[str, Any] = {"method": method, "columns": {}, "reference_rows": len(ref), "current_rows": len(cur)}
    for m in snap.dict().get("metrics", []):
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            value = m.get("value")
            thr = cfg.get("threshold")
            result["columns"][cfg.get("column")] = {
                "value": value, "threshold": thr,
                "drifted": bool(value is not None and thr is not None and value >= thr),
            }
        elif cfg.get("type", "").endswith("DriftedColumnsCount"):
            result["drifted_columns"] = m.get("value")
    return result
