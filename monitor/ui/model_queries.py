"""What the model page reads: calibration history per evidence source, metrics per route,
reliability per window, the alerts in the charted span.

* History per source: the newest ``n`` time windows of each source (``uq_calwin`` index seeks).
* Per route (the task a request came in on, ``samples.route``): computed here from the newest
  ``ROUTE_LABELS`` human/ground-truth labels of the model, split per route into up to
  ``ROUTE_BUCKETS`` consecutive groups of equal count, each with the project's window metrics
  (``monitor.calibration.metrics.window_metrics``, with bootstrap CIs). Bounded by the label
  count, not the table size.
* Reliability diagrams: ``RELIABILITY_WINDOWS`` time windows spread over the charted ones, each
  window's samples read by the (model, ts) index range, one verdict per sample (ground truth, else
  human, else the spot check), unweighted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.calibration.evidence import HUMAN_SOURCES
from monitor.calibration.metrics import window_metrics
from monitor.spotcheck.answers import spotcheck_correct
from storage.models import Alert, OVERALL_TASK, CalibrationWindow, Label, Sample, Score, SpotCheck

__all__ = ["RouteBucket", "history", "route_buckets", "reliability_windows", "windows_around", "alerts_since",
           "ROUTE_LABELS", "ROUTE_BUCKETS", "RELIABILITY_WINDOWS"]

ROUTE_LABELS = 3000  # newest labels the per-route metrics are computed on
ROUTE_BUCKETS = 8  # points per route series
ROUTE_MIN_BUCKET = 20  # labels per point at least
ROUTE_BOOTSTRAP = 50  # resamples for the per-route CIs (24 windows' worth per page: the page's main cost)
RELIABILITY_WINDOWS = 6
MAX_MARKS = 50  # alert marks per chart
SOURCES = ("human", "self_consistency", "combined")


def history(session: Session, model: str, probe_version_id: int, n: int) -> dict[str, list[CalibrationWindow]]:
    """The newest ``n`` time windows per evidence source, oldest first."""
    out = {}
    for source in SOURCES:
        rows = list(session.scalars(select(CalibrationWindow).where(
            CalibrationWindow.model == model, CalibrationWindow.probe_version_id == probe_version_id,
            CalibrationWindow.kind == "time", CalibrationWindow.source == source,
            CalibrationWindow.task == OVERALL_TASK)
            .order_by(CalibrationWindow.window_start.desc()).limit(n)))
        out[source] = rows[::-1]
    return out


@dataclass(frozen=True)
class RouteBucket:
    route: str
    start: datetime
    end: datetime
    metrics: dict[str, Any]


def route_buckets(session: Session, model: str, probe_version_id: int, threshold: float, bins: int,
                  limit: int = ROUTE_LABELS) -> dict[str, list[RouteBucket]]:
    """Window metrics per route over the newest ``limit`` labelled samples, oldest bucket first."""
    # the newest labels first (labels' primary key backwards, samples by primary key), each with its
    # score looked up by (sample_id, probe): never a scan of the probe's scores, on either backend
    recent = (select(Label.sample_id, Label.source, Label.correct, Sample.route, Sample.ts)
              .join(Sample, Sample.id == Label.sample_id)
              .where(Label.source.in_(HUMAN_SOURCES), Sample.model == model)
              .order_by(Label.id.desc()).limit(limit).subquery("recent"))
    rows = session.execute(select(recent.c.sample_id, recent.c.source, recent.c.route, recent.c.ts,
                                  _score_of(recent.c.sample_id, probe_version_id), recent.c.correct)).all()
    rows = [r for r in rows if r[4] is not None]
    per: dict[str, dict[str, tuple]] = {}
    for sid, source, route, ts, p, y in rows:  # one row per sample: ground truth over a human label
        cur = per.setdefault(route, {}).get(sid)
        if cur is None or (source == "ground_truth" and cur[0] != "ground_truth"):
            per[route][sid] = (source, ts, float(p), bool(y))
    out: dict[str, list[RouteBucket]] = {}
    for route, by_sample in sorted(per.items()):
        items = sorted(by_sample.values(), key=lambda r: r[1])
        k = max(1, min(ROUTE_BUCKETS, len(items) // ROUTE_MIN_BUCKET))
        buckets = []
        for part in np.array_split(np.arange(len(items)), k):
            chunk = [items[i] for i in part]
            s = np.array([c[2] for c in chunk])
            y = np.array([float(c[3]) for c in chunk])
            rng = np.random.default_rng(len(chunk))
            m = window_metrics(s, y, threshold=threshold, bins=bins, bootstrap=ROUTE_BOOTSTRAP, rng=rng)
            buckets.append(RouteBucket(route, chunk[0][1], chunk[-1][1], m))
        out[route] = buckets
    return out


def reliability_windows(session: Session, model: str, probe_version_id: int, windows: list[CalibrationWindow],
                        bins: int) -> list[tuple[CalibrationWindow, dict[str, Any]]]:
    """Reliability tables of up to ``RELIABILITY_WINDOWS`` windows spread evenly over ``windows``
    (the first and the newest among them, so a change shows), combined evidence, oldest first."""
    from monitor.report.plots import reliability_table

    out = []
    k = min(RELIABILITY_WINDOWS, len(windows))
    picks = sorted({round(i * (len(windows) - 1) / max(1, k - 1)) for i in range(k)}) if k else []
    for w in (windows[i] for i in picks):
        rows = _window_evidence(session, model, probe_version_id, w.window_start, w.window_end)
        if not rows:
            continue
        p = np.array([r[0] for r in rows])
        y = np.array([float(r[1]) for r in rows])
        out.append((w, reliability_table(p, y, bins)))
    return out


def _score_of(sample_id: Any, probe_version_id: int) -> Any:
    """The probe's score of ``sample_id`` as a correlated subquery: a (sample_id, probe) index lookup."""
    return (select(Score.p_correct).where(Score.sample_id == sample_id, Score.probe_version_id == probe_version_id)
            .scalar_subquery())


def _window_evidence(session: Session, model: str, probe_version_id: int, start: datetime,
                     end: datetime) -> list[tuple[float, bool]]:
    """(score, correct) per sample of ``model`` in [start, end) with evidence: ground truth, else a
    human label, else the spot check's verdict (``spotcheck_correct``), one per sample and
    unweighted (the history's ``combined`` source instead mixes the sources with fixed shares and
    weights spot checks by 1 / inclusion probability). Driven by the (model, ts) index range."""
    def label(source: str) -> Any:
        return (select(Label.correct).where(Label.sample_id == Sample.id, Label.source == source)
                .limit(1).scalar_subquery())

    sc = select(SpotCheck.agreement).where(SpotCheck.sample_id == Sample.id).scalar_subquery()
    rows = session.execute(select(_score_of(Sample.id, probe_version_id), label("ground_truth"), label("human"), sc)
                           .where(Sample.model == model, Sample.ts >= start, Sample.ts < end)).all()
    out = []
    for p, gt, hu, agreement in rows:
        verdict = gt if gt is not None else hu if hu is not None else (
            None if agreement is None else spotcheck_correct(agreement))
        if p is not None and verdict is not None:
            out.append((float(p), bool(verdict)))
    return out


def windows_around(session: Session, model: str, probe_version_id: int, source: str, at: datetime,
                   before: int = 18, after: int = 6, task: str | None = None) -> list[CalibrationWindow]:
    """Time windows of one source (overall, or of ``task``) up to ``at`` (``before`` of them) and just
    after it (``after``)."""
    base = select(CalibrationWindow).where(
        CalibrationWindow.model == model, CalibrationWindow.probe_version_id == probe_version_id,
        CalibrationWindow.kind == "time", CalibrationWindow.source == source,
        CalibrationWindow.task == (task or OVERALL_TASK))
    older = list(session.scalars(base.where(CalibrationWindow.window_start <= at)
                                 .order_by(CalibrationWindow.window_start.desc()).limit(before)))
    newer = list(session.scalars(base.where(CalibrationWindow.window_start > at)
                                 .order_by(CalibrationWindow.window_start).limit(after)))
    return older[::-1] + newer


def alerts_since(session: Session, model: str, start: datetime, limit: int = MAX_MARKS) -> list[Alert]:
    """The newest ``limit`` alerts of ``model`` that started after ``start`` (a minute of slack):
    an alert fires after the windows it is about (labels arrive late), so there is no upper bound."""
    rows = session.scalars(select(Alert).where(Alert.model == model, Alert.started_at >= start - timedelta(minutes=1))
                           .order_by(Alert.started_at.desc()).limit(limit))
    return list(rows)[::-1]
