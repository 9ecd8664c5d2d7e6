"""What an operator graphs and alerts on, read from the database at scrape time.

A prometheus_client custom collector (the ``Collector.collect()`` extension point): every
``/metrics`` scrape of any process that serves the API (the daemon, or ``vlmwatch api`` alone)
reports the database's truth, not one process's memory. One read runs a handful of indexed
queries and is cached for ``api.metrics_cache_seconds``, so a scrape storm reads once.

Exported (labels: ``model``, ``probe_version`` = the probe's version string, ``source`` =
human | self_consistency | combined, ``task`` = "all" for the overall windows, else the task's name
(``collectors.tasks``),
``window`` = rolling | time):

* ``vlmwatch_calibration_<stat>`` and ``..._ci_lower`` / ``..._ci_upper`` of the newest window of
  each active probe version x source x window kind, for auroc, ece (equal-mass bins), brier,
  agreement (probe verdict == evidence), accuracy (the evidence) and estimated_accuracy (the
  label-free estimate: the window's mean calibrated probe score); ``..._window_samples``,
  ``..._window_partial`` (1: too little evidence to alert on), ``..._window_end_timestamp_seconds``;
* ``vlmwatch_probe_info`` (1 per active probe version);
* ``vlmwatch_scoring_queue_depth`` / ``vlmwatch_scoring_lag_seconds`` per model (samples waiting
  for a score; how long the oldest has waited since it reached storage);
* ``vlmwatch_spotcheck_budget_used_seconds`` (compute spent in the last hour) and
  ``vlmwatch_spotcheck_budget_seconds`` (``spotcheck.gpu_seconds_per_hour``);
* ``vlmwatch_detector_statistic`` / ``_threshold`` / ``_firing`` and ``vlmwatch_detector_alarms_total``
  per detector (``detector`` = cusum_disagreement | cusum_residual | window_drift | adwin_*,
  ``source``), from the persisted ``detector_states`` rows; a CUSUM fires while statistic > threshold;
* ``vlmwatch_alert_firing`` (1 firing, 0 not) per rule x active probe version, and per firing alert;
  ``vlmwatch_alert_deliveries{status}`` (outbox rows pending, sending, gave_up);
  ``vlmwatch_labels_waiting_for_sample``;
* ``vlmwatch_input_drift_*`` per model (``monitor.inputs.summary``): the newest input window's
  feature p-values (``feature``), smallest p-value and its tuned threshold, the vision embedding's
  MMD² and threshold, whether the window drifted, windows tested;
* ``vlmwatch_database_up`` (0 when the read failed: the other families are then absent) and
  ``vlmwatch_metrics_read_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from monitor.config import Settings
from monitor.inputs.summary import input_drift_metrics
from storage.models import (
    OVERALL_TASK, Alert, AlertDelivery, CalibrationWindow, DetectorState, Label, ProbeVersion, Sample, SpotCheck, utcnow,
)

__all__ = ["DatabaseCollector", "CALIBRATION_STATS", "detector_reading"]

log = logging.getLogger(__name__)

WINDOW_KINDS = ("rolling", "time")
WINDOW_SOURCES = ("human", "self_consistency", "combined")
ALL_TASKS = "all"  # the task label of the overall windows
DELIVERY_STATUSES = ("pending", "sending", "gave_up")  # the outbox rows still open or failed ('sent' grows forever)
CURSOR_ROWS = ("calibrate",)  # detector_states rows that are job cursors, not detectors

# exported name -> (key in CalibrationWindow.metrics, key of its CI, help)
CALIBRATION_STATS: dict[str, tuple[str, str, str]] = {
    "auroc": ("auroc", "auroc_ci", "AUROC of the probe score against the evidence"),
    "ece": ("ece_mass", "ece_mass_ci", "Expected calibration error of the probe score (equal-mass bins)"),
    "brier": ("brier", "brier_ci", "Brier score of the probe score against the evidence"),
    "agreement": ("agreement", "agreement_ci", "Share of samples whose probe verdict matches the evidence"),
    "accuracy": ("accuracy", "accuracy_ci", "Accuracy of the served answers according to the evidence"),
    "estimated_accuracy": ("est_accuracy", "est_accuracy_ci",
                           "Label-free accuracy estimate: the mean calibrated probe score of the window"),
}
_CAL_LABELS = ["model", "probe_version", "source", "task", "window"]
_DET_LABELS = ["model", "probe_version", "detector", "source"]


def detector_reading(name: str, state: dict[str, Any]) -> dict[str, float]:
    """``statistic``, ``threshold``, ``firing``, ``alarms`` of a persisted detector state (what it has).

    Labelled rows (``cusum_*`` rule kinds) keep the detector under ``state["detector"]`` (the GLR
    bank: ``stat``, ``h``, firing while ``stat > h``); ADWIN rows count ``detections``; window drift
    keeps its last ``result``.
    """
    kind = name.partition(":")[0]
    out: dict[str, float] = {}
    det = state.get("detector")
    if kind.startswith("cusum") and isinstance(det, dict) and "h" in det:
        stat = det.get("stat", 0.0)
        out.update(statistic=float(stat), threshold=float(det["h"]), firing=float(stat > det["h"]),
                   alarms=float(det.get("alarms", 0)))
    elif kind.startswith("adwin") and "detections" in state:
        out["alarms"] = float(state["detections"])
    elif kind == "window_drift" and isinstance(state.get("result"), dict):
        res = state["result"]
        out.update(statistic=float(res["score"]), threshold=float(res["threshold"]), firing=float(bool(res["drift"])))
    return out


class DatabaseCollector:
    """Reads the families above; ``cache_seconds`` bounds how often the database is read."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        *,
        cache_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.cache_seconds = settings.api.metrics_cache_seconds if cache_seconds is None else cache_seconds
        self.clock = clock
        self.now = now
        self.reads = 0  # database reads so far (the cache's effect, for tests)
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._read_at: float | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # concurrent scrapes wait for one read instead of each reading
            if self._read_at is None or self.clock() - self._read_at >= self.cache_seconds:
                self._cached = self._read()
                self._read_at = self.clock()
            return iter(list(self._cached))

    def _read(self) -> list[Metric]:
        t0 = time.perf_counter()
        self.reads += 1
        up = GaugeMetricFamily("vlmwatch_database_up", "1 when /metrics could read the database, else 0")
        try:
            with self.sessions() as s:
                families = list(self._families(s, self.now()))
            up.add_metric([], 1.0)
        except Exception as e:  # a scrape reports the outage instead of failing: alert on vlmwatch_database_up
            log.warning("/metrics: cannot read the database: %s: %s", type(e).__name__, e)
            families = []
            up.add_metric([], 0.0)
        took = GaugeMetricFamily("vlmwatch_metrics_read_seconds", "Wall time of the last database read for /metrics")
        took.add_metric([], time.perf_counter() - t0)
        return [*families, up, took]

    def _families(self, s: Session, now: datetime) -> Iterable[Metric]:
        probes = list(s.execute(select(ProbeVersion.id, ProbeVersion.model, ProbeVersion.version, ProbeVersion.layer,
                                       ProbeVersion.pooling).where(ProbeVersion.active.is_(True))))
        info = GaugeMetricFamily("vlmwatch_probe_info", "1 for each active probe version",
                                 labels=["model", "probe_version", "layer", "pooling"])
        for p in probes:
            info.add_metric([p.model, p.version, str(p.layer), p.pooling], 1.0)
        yield info
        yield from self._calibration(s, probes)
        yield from self._scoring(s, now, {p.model for p in probes})
        yield from self._spotcheck(s, now)
        yield from self._detectors(s, probes)
        yield from self._alerts(s, probes)
        yield from input_drift_metrics(s)

    def _calibration(self, s: Session, probes: list[Any]) -> Iterable[Metric]:
        fams = {}
        for name, (_, _, help_) in CALIBRATION_STATS.items():
            for suffix, what in (("", ""), ("_ci_lower", " (95% CI lower bound)"),
                                 ("_ci_upper", " (95% CI upper bound)")):
                fams[name + suffix] = GaugeMetricFamily(f"vlmwatch_calibration_{name}{suffix}", help_ + what,
                                                        labels=_CAL_LABELS)
        n = GaugeMetricFamily("vlmwatch_calibration_window_samples", "Samples with evidence in the window",
                              labels=_CAL_LABELS)
        partial = GaugeMetricFamily("vlmwatch_calibration_window_partial",
                                    "1 when the window has fewer than calibration.min_labels samples (never alerts)",
                                    labels=_CAL_LABELS)
        end = GaugeMetricFamily("vlmwatch_calibration_window_end_timestamp_seconds",
                                "End of the window (time: its end; rolling: its newest sample)", labels=_CAL_LABELS)
        for p in probes:
            tasks = [OVERALL_TASK, *sorted(t for t in s.scalars(select(CalibrationWindow.task).where(
                CalibrationWindow.probe_version_id == p.id).distinct()) if t != OVERALL_TASK)]
            for kind, source, task in ((k, src, t) for k in WINDOW_KINDS for src in WINDOW_SOURCES for t in tasks):
                row = s.scalars(select(CalibrationWindow).where(
                    CalibrationWindow.probe_version_id == p.id, CalibrationWindow.kind == kind,
                    CalibrationWindow.source == source, CalibrationWindow.task == task,
                ).order_by(CalibrationWindow.window_end.desc(), CalibrationWindow.id.desc()).limit(1)).first()
                if row is None:
                    continue
                labels = [p.model, p.version, source, task or ALL_TASKS, kind]
                m = row.metrics or {}
                for name, (key, ci_key, _) in CALIBRATION_STATS.items():
                    ci = m.get(ci_key) or [None, None]
                    for suffix, value in (("", m.get(key)), ("_ci_lower", ci[0]), ("_ci_upper", ci[1])):
                        if value is not None:
                            fams[name + suffix].add_metric(labels, float(value))
                n.add_metric(labels, float(row.n))
                partial.add_metric(labels, float(row.partial))
                end.add_metric(labels, row.window_end.timestamp())
        return [*fams.values(), n, partial, end]

    def _scoring(self, s: Session, now: datetime, models: set[str]) -> Iterable[Metric]:
        depth = GaugeMetricFamily("vlmwatch_scoring_queue_depth", "Samples waiting for a probe score", labels=["model"])
        lag = GaugeMetricFamily("vlmwatch_scoring_lag_seconds",
                                "How long the oldest sample waiting for a score has waited since it was stored",
                                labels=["model"])
        pending = {r[0]: (int(r[1]), r[2]) for r in s.execute(
            select(Sample.model, func.count(), func.min(Sample.received_at))
            .where(Sample.status == "pending").group_by(Sample.model))}
        for model in sorted(models | set(self.settings.models) | set(pending)):
            k, oldest = pending.get(model, (0, None))
            depth.add_metric([model], float(k))
            lag.add_metric([model], max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
        waiting = GaugeMetricFamily("vlmwatch_labels_waiting_for_sample",
                                    "Labels stored by response_id whose sample has not arrived")
        ahead = s.scalar(select(func.count()).select_from(Label).where(Label.sample_id.is_(None)))
        waiting.add_metric([], float(ahead or 0))
        return [depth, lag, waiting]

    def _spotcheck(self, s: Session, now: datetime) -> Iterable[Metric]:
        used = GaugeMetricFamily("vlmwatch_spotcheck_budget_used_seconds", "Spot-check compute spent in the last hour "
                                 "(device seconds on GPU, wall seconds on CPU)")
        spent = s.scalar(select(func.coalesce(func.sum(SpotCheck.compute_seconds), 0.0))
                         .where(SpotCheck.created_at >= now - timedelta(hours=1)))
        used.add_metric([], float(spent or 0.0))
        budget = GaugeMetricFamily("vlmwatch_spotcheck_budget_seconds",
                                   "Spot-check compute budget per hour (spotcheck.gpu_seconds_per_hour)")
        budget.add_metric([], float(self.settings.spotcheck.gpu_seconds_per_hour))
        return [used, budget]

    def _detectors(self, s: Session, probes: list[Any]) -> Iterable[Metric]:
        fams = {
            "statistic": GaugeMetricFamily("vlmwatch_detector_statistic", "Current statistic of a sequential detector",
                                           labels=_DET_LABELS),
            "threshold": GaugeMetricFamily("vlmwatch_detector_threshold", "Alarm threshold of the detector (tuned)",
                                           labels=_DET_LABELS),
            "firing": GaugeMetricFamily("vlmwatch_detector_firing", "1 while the detector is past its threshold",
                                        labels=_DET_LABELS),
            "alarms": CounterMetricFamily("vlmwatch_detector_alarms",
                                          "Alarms raised since the detector was (re)started", labels=_DET_LABELS),
        }
        by_id = {p.id: p for p in probes}
        if by_id:
            rows = s.execute(select(DetectorState.probe_version_id, DetectorState.detector, DetectorState.state)
                             .where(DetectorState.probe_version_id.in_(sorted(by_id)),
                                    DetectorState.detector.not_in(CURSOR_ROWS)))
            for pv_id, name, state in rows:
                if "@" in name:  # a task slice's detector (monitor.detect.tune.slice_name): its alerts carry the task
                    continue
                p = by_id[pv_id]
                kind, _, source = name.partition(":")
                for key, value in detector_reading(name, state or {}).items():
                    fams[key].add_metric([p.model, p.version, kind, source], value)
        return list(fams.values())

    def _alerts(self, s: Session, probes: list[Any]) -> Iterable[Metric]:
        firing = GaugeMetricFamily("vlmwatch_alert_firing",
                                   "1 while the alert is firing, 0 for a configured rule that is not",
                                   labels=["model", "probe_version", "rule", "severity"])
        values: dict[tuple[str, str, str, str], float] = {}
        for p in probes:
            for rule in self.settings.alerts.rules:
                values[(p.model, p.version, rule.name, rule.severity)] = 0.0
        q = select(Alert.model, Alert.probe_version, Alert.rule, Alert.severity).where(Alert.state == "firing")
        for a in s.execute(q):
            values[(a.model, a.probe_version or "", a.rule, a.severity)] = 1.0
        for key in sorted(values):
            firing.add_metric(list(key), values[key])
        deliveries = GaugeMetricFamily("vlmwatch_alert_deliveries",
                                       "Alert outbox rows by status (pending, sending, gave_up)", labels=["status"])
        counts = dict(s.execute(select(AlertDelivery.status, func.count()).where(
            AlertDelivery.status.in_(DELIVERY_STATUSES)).group_by(AlertDelivery.status)).tuples().all())
        for status in DELIVERY_STATUSES:
            deliveries.add_metric([status], float(counts.get(status, 0)))
        return [firing, deliveries]
