"""``build_report``: the calibration drift report (HTML + PNGs + JSON summary) for a period,
with the input-drift page (``monitor.inputs.summary``) beside it."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from monitor.config import Settings
from monitor.report.data import load_report_data, parse_since
from storage.models import ProbeVersion, Reference, utcnow

__all__ = ["build_report", "REPORT_FILES"]

logger = logging.getLogger(__name__)

REPORT_FILES = {
    "html": "score_drift.html",
    "reliability": "reliability.png",
    "timelines": "timelines.png",
    "summary": "summary.json",
    "input_drift_html": "input_drift.html",  # monitor.inputs.summary (input_drift.png beside it when there are windows)
}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "item"):
        return v.item()
    return v


def _reference_span(session: Session, model: str | None) -> tuple[datetime, datetime] | None:
    q = select(Reference).where(Reference.active.is_(True))
    if model:
        q = q.where(Reference.model == model)
    ref = session.scalars(q.order_by(Reference.created_at.desc())).first()
    return (ref.window_start, ref.window_end) if ref is not None else None


def build_report(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    since: str | timedelta = "7d",
    out_dir: str | Path,
    model: str | None = None,
    now: datetime | None = None,
    progress: bool = False,
    shift_at: datetime | None = None,
    task_of: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """Write the report into ``out_dir``; return the JSON summary (also written as summary.json).

    ``shift_at`` (the demo) draws a marker where a shift was injected. ``task_of`` (the demo: a
    prompt's SynPOPE task) adds per-task figures (``by_task`` in the summary, ``tasks.html``):
    labelled accuracy, the probe's calibration against the labels, spot checks (K-sample ones
    apart), overall and, with ``shift_at``, before and after the shift.
    """
    import pandas as pd

    from monitor.inputs.summary import input_drift_summary, write_input_drift_page
    from monitor.progress import progress as progress_bar
    from monitor.report.drift import evidently_drift, split_reference_current
    from monitor.report.plots import plot_reliability, plot_timelines, report_windows

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    end = now or utcnow()
    start = end - parse_since(since)
    steps = progress_bar(5, "report", "step", enabled=progress, leave=False)
    with sessions() as s:
        data = load_report_data(s, start, end, model)
        ref_span = _reference_span(s, model)
    steps.update(1)
    scores = data.scores
    cal = settings.calibration
    ref, cur, ref_how = split_reference_current(scores, ref_span, cal.reference_n, cal.rolling_n)
    drift = evidently_drift(ref, cur, out / REPORT_FILES["html"], method=settings.detect.drift_method)
    steps.update(1)
    labelled = scores[scores["correct"].notna()].copy()
    labelled["correct"] = labelled["correct"].astype(float)
    shift_ts = pd.Timestamp(shift_at) if shift_at is not None else None
    spans = report_windows(labelled, data.windows)
    tables = plot_reliability(labelled, spans, out / REPORT_FILES["reliability"], bins=cal.bins, shift_at=shift_ts)
    steps.update(1)
    drawn = plot_timelines(data.windows, data.alerts, out / REPORT_FILES["timelines"], shift_at=shift_ts)
    steps.update(1)
    with sessions() as s:
        inputs = input_drift_summary(s, model)
        input_files = write_input_drift_page(s, inputs, out)
    steps.update(1)
    steps.close()
    by_task: dict[str, Any] = {}
    if task_of is not None:
        from monitor.report.tasks import task_figures, write_task_page

        threshold = 0.5
        if len(scores):  # the decision threshold of the probe version that scored most of them
            with sessions() as s:
                pv = s.get(ProbeVersion, int(scores["probe_version_id"].mode().iloc[0]))
                threshold = float(pv.threshold) if pv is not None and pv.threshold is not None else 0.5
        by_task = task_figures(scores, task_of, shift_at=shift_at, threshold=threshold, bins=cal.bins)
        write_task_page(by_task, out)
    latest: dict[str, Any] = {}
    if not data.windows.empty:
        for (m, src, kind), g in data.windows.sort_values("window_end").groupby(["model", "source", "kind"]):
            row = g.iloc[-1]
            latest[f"{m}/{kind}/{src}"] = {k: row.get(k) for k in ("window_start", "window_end", "n", "partial", "auroc",
                                                                   "auroc_ci", "ece", "agreement", "agreement_ci")}
    summary = {
        "generated_at": end,
        "period": {"start": start, "end": end, "since": str(since)},
        "model": model,
        "samples": data.samples_total,
        "scored": int(len(scores)),
        "labelled": int(len(labelled)),
        "spot_checked": int(scores["sc_agreement"].notna().sum()) if "sc_agreement" in scores else 0,
        "reference": {"how": ref_how, "rows": int(len(ref))},
        "current": {"rows": int(len(cur))},
        "score_drift": drift,
        "reliability_windows": [{k: t[k] for k in ("window_start", "window_end", "n", "ece", "accuracy", "mean_score")}
                                for t in tables],
        "calibration_latest": latest,
        "timeline_series": drawn["series"],
        "alerts": [{k: a[k] for k in ("id", "rule", "state", "severity", "model", "started_at", "resolved_at")}
                   for a in data.alerts.to_dict("records")],
        "input_drift": inputs,
        **({"by_task": by_task} if task_of is not None else {}),
        "files": {**REPORT_FILES, **{f"input_drift_{k}": v for k, v in input_files.items()},
                  **({"tasks_html": "tasks.html"} if task_of is not None else {})},
    }
    summary = _clean(summary)
    (out / REPORT_FILES["summary"]).write_text(json.dumps(summary, indent=2, default=str))
    logger.info("report for %s – %s written to %s", start, end, out)
    return summary
