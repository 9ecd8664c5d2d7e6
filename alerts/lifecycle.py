"""Alert rules and lifecycle: signals from the detectors become alerts, deduplicated and resolved.

A :class:`Signal` is one detector's verdict for one served model × probe version at one
evaluation: ``firing``, ``clear`` or ``partial`` (too little evidence: never fires, never counts
towards resolving). :func:`evaluate` applies the configured rules (``alerts.rules``):

* fingerprint = rule + model + probe version (+ the signal's ``task`` for a task slice: the overall
  alert and each task's are distinct, fire and resolve on their own); at most one open (firing) alert per fingerprint;
  a condition that keeps firing updates that alert instead of opening another (dedupe);
* hysteresis: an alert resolves after ``resolve_after`` consecutive clear evaluations;
* renotify: a still-firing alert is sent again after ``renotify_minutes``;
* no data: the built-in ``no_data`` rule fires when a detector reports no evidence for
  ``no_data_minutes`` and resolves on the first evaluation with evidence;
* rules with ``detector: metric`` fire when a window metric is beyond ``threshold`` by its whole
  95% CI (not just the point estimate), so a noisy small window does not fire.

Each transition queues one outbox row per configured channel in the same transaction
(:func:`alerts.outbox.enqueue`), so a notification is never lost between the state change and the
delivery. ``config`` is the ``alerts`` section of the settings (:class:`alerts.settings.AlertsSettings`).
A built-in rule (:mod:`alerts.rules`) is evaluated on its own with ``rules=[rule]``
(:mod:`alerts.builtin`): the section's channels and timings apply to it, the configured rules do not.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Literal, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.outbox import enqueue
from alerts.payload import fingerprint
from alerts.rules import NO_DATA, Rule
from alerts.settings import AlertsSettings
from storage.models import Alert

__all__ = ["Signal", "Transition", "evaluate"]

log = logging.getLogger(__name__)

Status = Literal["firing", "clear", "partial"]
_RANK = {"firing": 2, "clear": 1, "partial": 0}


@dataclass
class Signal:
    detector: str  # cusum_disagreement | cusum_residual | adwin_scores | adwin_spotcheck | window_drift | metric | no_data
    model: str
    probe_version: str | None
    status: Status
    metrics: dict[str, Any] = field(default_factory=dict)  # values with CIs
    detector_state: dict[str, Any] = field(default_factory=dict)
    window: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)  # reference, sample ids
    summary: str = ""
    task: str | None = None  # the task slice the detector watched; None: every sample (overall)


@dataclass(frozen=True)
class Transition:
    alert_id: str
    fingerprint: str
    event: str  # firing | renotify | resolved
    rule: str


def _metric_status(rule: Rule, sig: Signal) -> Status:
    """firing when the metric (and its whole CI, when known) is beyond the threshold."""
    if sig.status == "partial" or rule.metric is None or rule.threshold is None:
        return "partial"
    value = sig.metrics.get(rule.metric)
    if value is None:
        return "partial"
    ci = sig.metrics.get(f"{rule.metric}_ci") or [None, None]
    if rule.op == "<":
        bound = ci[1] if ci[1] is not None else value
        return "firing" if bound < rule.threshold else "clear"
    bound = ci[0] if ci[0] is not None else value
    return "firing" if bound > rule.threshold else "clear"


def _rule_status(rule: Rule, sig: Signal) -> Status:
    return _metric_status(rule, sig) if rule.detector == "metric" else sig.status


def _reads(rule: Rule, sig: Signal) -> bool:
    """A ``detector: metric`` rule reads only the window of the ``source`` it names."""
    return rule.detector != "metric" or sig.window.get("source") == rule.source


def _merge(sigs: list[tuple[Status, Signal]]) -> tuple[Status, Signal]:
    """Several signals for one fingerprint (e.g. per evidence source): the strongest wins."""
    status, sig = max(sigs, key=lambda p: _RANK[p[0]])
    if len(sigs) > 1:
        sig = Signal(**{**sig.__dict__})
        sig.metrics = {**sig.metrics, "by_source": {s.window.get("source", str(i)): s.metrics for i, (_, s) in enumerate(sigs)}}
    return status, sig


def _fill(alert: Alert, sig: Signal) -> None:
    alert.metrics = sig.metrics
    alert.detector = sig.detector_state
    alert.window = sig.window
    alert.evidence = {**sig.evidence, "summary": sig.summary}


def evaluate(session: Session, config: AlertsSettings, signals: Iterable[Signal], now: datetime, *,
             rules: Sequence[Rule] | None = None) -> list[Transition]:
    """Apply the rules to ``signals``; write alert rows and outbox rows (caller commits).

    ``rules``: the configured ones (``config.rules``, plus ``no_data`` when ``config.no_data_minutes``)
    unless given."""
    if rules is None:
        rules = [*config.rules, *([NO_DATA] if config.no_data_minutes else [])]
    grouped: dict[tuple[str, str, str | None, str | None], list[tuple[Status, Signal]]] = {}
    for sig in signals:
        for rule in rules:
            if rule.detector == sig.detector and _reads(rule, sig):
                key = (rule.name, sig.model, sig.probe_version, sig.task)
                grouped.setdefault(key, []).append((_rule_status(rule, sig), sig))
    by_name = {r.name: r for r in rules}
    out: list[Transition] = []
    renotify = timedelta(minutes=float(config.renotify_minutes))
    for (rule_name, model, probe_version, task), sigs in grouped.items():
        rule = by_name[rule_name]
        status, sig = _merge(sigs)
        fp = fingerprint(rule_name, model, probe_version, task)
        where = f" task={task}" if task else ""
        alert = session.scalars(
            select(Alert).where(Alert.fingerprint == fp, Alert.state == "firing").order_by(Alert.started_at.desc())
        ).first()
        if status == "firing":
            if alert is None:
                alert = Alert(
                    id=uuid.uuid4().hex, fingerprint=fp, rule=rule_name, state="firing", severity=rule.severity,
                    model=model, probe_version=probe_version, task=task, clear_count=0, started_at=now,
                    last_notified_at=now,
                )
                _fill(alert, sig)
                session.add(alert)
                session.flush()
                enqueue(session, config, alert, "firing", now)
                out.append(Transition(alert.id, fp, "firing", rule_name))
                log.warning("alert firing: %s model=%s probe=%s%s (%s)", rule_name, model, probe_version, where, sig.summary)
                continue
            alert.clear_count = 0
            _fill(alert, sig)
            last = alert.last_notified_at or alert.started_at
            if now - last >= renotify:
                alert.last_notified_at = now
                enqueue(session, config, alert, "renotify", now)
                out.append(Transition(alert.id, fp, "renotify", rule_name))
        elif status == "clear" and alert is not None:
            alert.clear_count = (alert.clear_count or 0) + 1
            if alert.clear_count >= max(1, int(rule.resolve_after)):
                alert.state = "resolved"
                alert.resolved_at = now
                alert.metrics = {**(alert.metrics or {}), "at_resolve": sig.metrics}
                enqueue(session, config, alert, "resolved", now)
                out.append(Transition(alert.id, fp, "resolved", rule_name))
                log.info("alert resolved: %s model=%s probe=%s%s", rule_name, model, probe_version, where)
    session.flush()
    return out
