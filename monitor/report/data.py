"""What a report reads from storage: scores with their evidence, calibration history, alerts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Alert, OVERALL_TASK, CalibrationWindow, Label, Sample, Score, SpotCheck

__all__ = ["parse_since", "ReportData", "load_report_data", "EVIDENCE_SOURCES"]

EVIDENCE_SOURCES = ("ground_truth", "human")  # labels that count as correctness evidence in the report
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | timedelta) -> timedelta:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"`` -> timedelta; a clear error otherwise."""
    if isinstance(text, timedelta):
        return text
    m = _SPAN.match(str(text))
    if not m:
        raise ValueError(f"--since must be a number with a unit s, m, h, d or w (e.g. 7d), got {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


@dataclass
class ReportData:
    start: datetime
    end: datetime
    scores: pd.DataFrame  # one row per score: sample_id, model, ts, probe_version_id, p_correct, ..., prompt, correct, sc_agreement, sc_one_token
    windows: pd.DataFrame  # calibration history rows in the period, metrics flattened
    alerts: pd.DataFrame  # alerts that started in the period or are still firing
    samples_total: int


def _frame(rows: list[Any], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def load_report_data(session: Session, start: datetime, end: datetime, model: str | None = None) -> ReportData:
    from sqlalchemy import func

    sq = select(Score.sample_id, Sample.model, Sample.ts, Score.probe_version_id, Score.p_correct, Score.answer_prob,
                Score.attn_entropy, Score.attn_topk_mass, Score.created_at, Sample.prompt).join(Sample, Sample.id == Score.sample_id)
    sq = sq.where(Sample.ts >= start, Sample.ts < end)
    if model:
        sq = sq.where(Sample.model == model)
    scores = _frame(session.execute(sq.order_by(Sample.ts, Sample.id)).all(),
                    ["sample_id", "model", "ts", "probe_version_id", "p_correct", "answer_prob", "attn_entropy",
                     "attn_topk_mass", "scored_at", "prompt"])
    ids = set(scores["sample_id"])
    lab = _frame(session.execute(
        select(Label.sample_id, Label.source, Label.correct).join(Sample, Sample.id == Label.sample_id)
        .where(Sample.ts >= start, Sample.ts < end, Label.source.in_(EVIDENCE_SOURCES))).all(),
        ["sample_id", "source", "correct"])
    lab = lab[lab["sample_id"].isin(ids)].sort_values("source")  # ground_truth sorts before human: truth wins
    lab = lab.drop_duplicates("sample_id", keep="first")
    scores = scores.merge(lab[["sample_id", "correct"]], on="sample_id", how="left")
    sc = _frame(session.execute(
        select(SpotCheck.sample_id, SpotCheck.agreement, SpotCheck.one_token).join(Sample, Sample.id == SpotCheck.sample_id)
        .where(Sample.ts >= start, Sample.ts < end)).all(), ["sample_id", "sc_agreement", "sc_one_token"])
    scores = scores.merge(sc, on="sample_id", how="left")
    for c in ("ts", "scored_at"):
        scores[c] = pd.to_datetime(scores[c], utc=True)

    wq = select(CalibrationWindow).where(CalibrationWindow.window_end >= start, CalibrationWindow.window_start < end,
                                         CalibrationWindow.task == OVERALL_TASK)  # the overall series
    if model:
        wq = wq.where(CalibrationWindow.model == model)
    wrows = []
    for w in session.scalars(wq.order_by(CalibrationWindow.window_end)):
        d = {k: getattr(w, k) for k in ("model", "probe_version_id", "kind", "source", "window_start", "window_end",
                                         "n", "partial", "auroc", "ece", "brier", "agreement", "mean_score")}
        for k, v in (w.metrics or {}).items():
            if k not in d:
                d[k] = v
        wrows.append(d)
    windows = pd.DataFrame(wrows)
    if not windows.empty:
        for c in ("window_start", "window_end"):
            windows[c] = pd.to_datetime(windows[c], utc=True)

    aq = select(Alert).where((Alert.started_at >= start) | (Alert.state == "firing")).where(Alert.started_at < end)
    if model:
        aq = aq.where(Alert.model == model)
    alerts = pd.DataFrame([
        {"id": a.id, "rule": a.rule, "state": a.state, "severity": a.severity, "model": a.model,
         "started_at": a.started_at, "resolved_at": a.resolved_at, "detector": a.detector, "metrics": a.metrics}
        for a in session.scalars(aq.order_by(Alert.started_at))
    ], columns=["id", "rule", "state", "severity", "model", "started_at", "resolved_at", "detector", "metrics"])
    if not alerts.empty:
        alerts["started_at"] = pd.to_datetime(alerts["started_at"], utc=True)
        alerts["resolved_at"] = pd.to_datetime(alerts["resolved_at"], utc=True)
    total_q = select(func.count()).select_from(Sample).where(Sample.ts >= start, Sample.ts < end)
    if model:
        total_q = total_q.where(Sample.model == model)
    total = int(session.scalar(total_q) or 0)
    return ReportData(start, end, scores, windows, alerts, total)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
