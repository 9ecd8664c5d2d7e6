"""Per-task figures of a report: scores, labels and spot checks sliced by each sample's task.

A sample's task comes from a caller's ``task_of(prompt)`` (the demo traces its SynPOPE prompts
back to their task, :func:`monitor.demo.tasks.task_of_prompt`); samples it cannot place count as
``other``. With a shift time the figures are given before and after it as well.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["task_figures", "write_task_page", "TASKS_FILE"]

TASKS_FILE = "tasks.html"


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 4)


def _figures(g: pd.DataFrame, threshold: float, bins: int) -> dict[str, Any]:
    from monitor.calibration.metrics import auroc, ece

    lab = g[g["correct"].notna()]
    y = lab["correct"].astype(float).to_numpy()
    s = lab["p_correct"].astype(float).to_numpy()
    both = y.size > 0 and 0 < y.sum() < y.size
    one_token = g["sc_one_token"] if "sc_one_token" in g else pd.Series(dtype=object)
    checked = g["sc_agreement"].notna() if "sc_agreement" in g else pd.Series(False, index=g.index)
    return {
        "scored": int(len(g)),
        "labelled": int(len(lab)),
        "accuracy": _num(y.mean()) if y.size else None,  # share of labelled answers that were correct
        "mean_score": _num(s.mean()) if s.size else None,  # mean probe p_correct on them
        "ece": _num(ece(s, y, bins=bins)) if y.size else None,
        "auroc": _num(auroc(s, y)) if both else None,
        "disagreement": _num(float(np.mean((s >= threshold) != (y > 0.5)))) if y.size else None,
        "spot_checked": int(checked.sum()),
        "spot_checked_k_sample": int((one_token[checked] == False).sum()) if len(one_token) else 0,  # noqa: E712
        "mean_agreement": _num(g.loc[checked, "sc_agreement"].mean()) if checked.any() else None,
    }


def task_figures(scores: pd.DataFrame, task_of: Callable[[str], str | None], *, shift_at: Any = None,
                 threshold: float = 0.5, bins: int = 10) -> dict[str, Any]:
    """``{task: {"all": figures, "before": ..., "after": ...}}`` (periods only with ``shift_at``)."""
    if scores.empty or "prompt" not in scores:
        return {}
    df = scores.copy()
    df["task"] = [task_of(p) or "other" for p in df["prompt"]]
    out: dict[str, Any] = {}
    shift_ts = pd.Timestamp(shift_at) if shift_at is not None else None
    for task, g in df.groupby("task", sort=True):
        row = {"all": _figures(g, threshold, bins)}
        if shift_ts is not None:
            row["before"] = _figures(g[g["ts"] < shift_ts], threshold, bins)
            row["after"] = _figures(g[g["ts"] >= shift_ts], threshold, bins)
        out[str(task)] = row
    return out


_COLUMNS = ("scored", "labelled", "accuracy", "mean_score", "ece", "auroc", "disagreement", "spot_checked",
            "spot_checked_k_sample", "mean_agreement")


def write_task_page(by_task: dict[str, Any], out: Path) -> Path:
    """A plain HTML table of :func:`task_figures` (one row per task and period)."""
    head = "".join(f"<th>{c}</th>" for c in ("task", "period", *_COLUMNS))
    rows = []
    for task, periods in by_task.items():
        for period, f in periods.items():
            cells = "".join(f"<td>{'' if f.get(c) is None else f.get(c)}</td>" for c in _COLUMNS)
            rows.append(f"<tr><td>{html.escape(task)}</td><td>{html.escape(period)}</td>{cells}</tr>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>vlmwatch: per-task figures</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style></head><body>"
            "<h1>Per-task figures</h1><p>accuracy: share of ground-truth-labelled answers judged correct; "
            "mean_score, ece, auroc, disagreement: the probe's p_correct against those labels; "
            "spot_checked_k_sample: spot checks that ran the K-sample decode (multi-token answers).</p>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table></body></html>")
    path = out / TASKS_FILE
    path.write_text(page, encoding="utf-8")
    return path
