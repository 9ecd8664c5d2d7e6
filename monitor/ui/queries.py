"""What the overview and alert pages read: small queries that stay cheap on millions of samples.

Every query here is an index seek or a scan bounded by something small (the pending queue, the
last hour of spot checks, the last few hundred labels, the alerts table), never a scan of all
samples: the distinct model names come from a loose index scan of ``ix_samples_model_ts`` (one
seek per model), per-model counts from ranges of the same index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from monitor.calibration.evidence import HUMAN_SOURCES
from storage.models import Alert, OVERALL_TASK, CalibrationWindow, Label, ProbeVersion, Sample, SpotCheck

if TYPE_CHECKING:
    from collections.abc import Iterable

    from monitor.config import AlertRule, Settings

__all__ = [
    "ModelSummary", "Overview", "overview", "model_names", "probe_versions", "latest_windows", "alerts_list",
    "get_alert", "alert_statistics", "probe_for_alert",
]

MAX_MODELS = 200  # model names listed (a loose index scan: one seek each)
LABEL_LAG_SAMPLE = 500  # newest labels the label lag is measured on
SOURCES = ("human", "self_consistency", "combined")


@dataclass
class ModelSummary:
    name: str
    configured: bool
    probe: ProbeVersion | None
    pending: int = 0
    oldest_pending: datetime | None = None
    samples_last_hour: int = 0
    newest_sample: datetime | None = None
    label_lag_seconds: float | None = None
    labels_measured: int = 0
    firing: int = 0
    windows: dict[str, CalibrationWindow] = field(default_factory=dict)  # latest rolling window per source

    def scoring_lag_seconds(self, now: datetime) -> float | None:
        return (now - self.oldest_pending).total_seconds() if self.oldest_pending else None


@dataclass
class Overview:
    now: datetime
    models: list[ModelSummary]
    firing: list[Alert]
    recent: list[Alert]
    spot_seconds_last_hour: float
    spot_checks_last_hour: int
    spot_budget_seconds: float

    @property
    def spot_budget_share(self) -> float:
        return self.spot_seconds_last_hour / self.spot_budget_seconds if self.spot_budget_seconds > 0 else 0.0


def model_names(session: Session, configured: list[str]) -> list[str]:
    """Configured models, models with probes, and models that have samples (loose index scan)."""
    seen = set(configured)
    seen.update(session.scalars(select(ProbeVersion.model).distinct()))
    rows = session.execute(text(
        "WITH RECURSIVE m(name, depth) AS ("
        " SELECT (SELECT min(model) FROM samples), 0"
        " UNION ALL"
        " SELECT (SELECT min(model) FROM samples WHERE model > m.name), depth + 1 FROM m"
        " WHERE m.name IS NOT NULL AND depth < :cap)"
        " SELECT name FROM m WHERE name IS NOT NULL"), {"cap": MAX_MODELS})
    seen.update(r[0] for r in rows)
    return sorted(seen)


def probe_versions(session: Session, model: str) -> list[ProbeVersion]:
    return list(session.scalars(select(ProbeVersion).where(ProbeVersion.model == model)
                                .order_by(ProbeVersion.active.desc(), ProbeVersion.id.desc())))


def latest_windows(session: Session, model: str, probe_version_id: int, kind: str = "rolling") -> dict[str, CalibrationWindow]:
    """The newest calibration window of each evidence source (uq_calwin index, one seek each)."""
    out = {}
    for source in SOURCES:
        row = session.scalars(select(CalibrationWindow).where(
            CalibrationWindow.model == model, CalibrationWindow.probe_version_id == probe_version_id,
            CalibrationWindow.kind == kind, CalibrationWindow.source == source,
            CalibrationWindow.task == OVERALL_TASK)
            .order_by(CalibrationWindow.window_start.desc()).limit(1)).first()
        if row is not None:
            out[source] = row
    return out


def _label_lags(session: Session) -> dict[str, list[float]]:
    """Seconds from request to label, per model, over the newest human/ground-truth labels."""
    rows = session.execute(
        select(Sample.model, Label.created_at, Sample.ts).join(Sample, Sample.id == Label.sample_id)
        .where(Label.source.in_(HUMAN_SOURCES)).order_by(Label.id.desc()).limit(LABEL_LAG_SAMPLE)).all()
    out: dict[str, list[float]] = {}
    for model, created, ts in rows:
        out.setdefault(model, []).append(max(0.0, (created - ts).total_seconds()))
    return out


def alerts_list(session: Session, state: str | None = None, model: str | None = None, limit: int = 50) -> list[Alert]:
    q = select(Alert)
    if state:
        q = q.where(Alert.state == state)
    if model:
        q = q.where(Alert.model == model)
    return list(session.scalars(q.order_by(Alert.started_at.desc()).limit(limit)))


def overview(session: Session, settings: Settings, now: datetime) -> Overview:
    names = model_names(session, list(settings.models))
    active = {pv.model: pv for pv in session.scalars(select(ProbeVersion).where(ProbeVersion.active.is_(True)))}
    pending = {m: (int(n), t) for m, n, t in session.execute(
        select(Sample.model, func.count(), func.min(Sample.ts)).where(Sample.status == "pending").group_by(Sample.model))}
    lags = _label_lags(session)
    firing = alerts_list(session, "firing", limit=200)
    hour_ago = now - timedelta(hours=1)
    models = []
    for name in names:
        m = ModelSummary(name=name, configured=name in settings.models, probe=active.get(name))
        m.pending, m.oldest_pending = pending.get(name, (0, None))
        m.samples_last_hour = int(session.scalar(select(func.count()).select_from(Sample).where(
            Sample.model == name, Sample.ts >= hour_ago)) or 0)
        m.newest_sample = session.scalar(select(func.max(Sample.ts)).where(Sample.model == name))
        if name in lags:
            m.label_lag_seconds, m.labels_measured = median(lags[name]), len(lags[name])
        m.firing = sum(1 for a in firing if a.model == name)
        if m.probe is not None:
            m.windows = latest_windows(session, name, m.probe.id)
        models.append(m)
    spent, checks = session.execute(select(func.coalesce(func.sum(SpotCheck.compute_seconds), 0.0), func.count())
                                    .where(SpotCheck.created_at >= hour_ago)).one()
    return Overview(now=now, models=models, firing=firing, recent=alerts_list(session, limit=20),
                    spot_seconds_last_hour=float(spent or 0.0), spot_checks_last_hour=int(checks or 0),
                    spot_budget_seconds=float(settings.spotcheck.gpu_seconds_per_hour))


def get_alert(session: Session, alert_id: str) -> Alert | None:
    return session.get(Alert, alert_id)


def probe_for_alert(session: Session, alert: Alert) -> ProbeVersion | None:
    if alert.probe_version is None:
        return None
    return session.scalars(select(ProbeVersion).where(ProbeVersion.model == alert.model,
                                                      ProbeVersion.version == alert.probe_version)).first()


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def alert_statistics(alert: Alert, rules: Iterable[AlertRule] = ()) -> list[tuple[str, float | None, float | None]]:
    """(what, statistic, threshold) pairs the alert's detector decided on, as far as it recorded them."""
    m, d = alert.metrics or {}, alert.detector or {}
    out: list[tuple[str, float | None, float | None]] = []
    threshold = _number(m.get("threshold", d.get("threshold", d.get("h"))))
    if _number(m.get("statistic")) is not None:  # the labelled GLR bank records its driving window; a CUSUM does not
        what = (f"GLR statistic, last {m['window_labels']} labels (after the window penalty)" if m.get("window_labels")
                else "CUSUM statistic")
        out.append((what, _number(m["statistic"]), threshold))
    if _number(m.get("drift_score")) is not None:
        out.append((f"drift score ({d.get('method', 'drift test')})", _number(m["drift_score"]), _number(d.get("threshold"))))
    for rule in rules:
        if rule.name == alert.rule and rule.detector == "metric" and rule.metric:
            out.append((f"{rule.metric} (fires when {rule.op} threshold)", _number(m.get(rule.metric)), rule.threshold))
    if alert.rule and not out and _number(m.get("minutes_without_evidence")) is not None:
        out.append(("minutes without evidence", _number(m["minutes_without_evidence"]), _number(d.get("no_data_minutes"))))
    return out
