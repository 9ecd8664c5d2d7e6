"""Raising and resolving the built-in alerts (:mod:`alerts.rules`): ``probe_stale`` and ``served_model_mismatch``.

They are not detector verdicts an operator tunes: they say the monitor's own evidence is void.
They still go through :func:`alerts.lifecycle.evaluate` (dedupe, renotify, an outbox row per
channel) with their rule alone (``rules=[rule]``), so the operator's channels and renotify interval
apply to them like to every other alert. The daemon's score and spot-check jobs call these helpers;
the code that detects the condition (``monitor.probe.stale``, ``monitor.probe.served_check``) only
raises an error or reports a verdict.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.lifecycle import Signal, Transition, evaluate
from alerts.rules import PROBE_STALE, SERVED_MODEL_MISMATCH
from alerts.settings import AlertsSettings
from storage.models import Alert, utcnow

__all__ = ["StaleProbe", "MismatchVerdict", "raise_probe_stale", "resolve_probe_stale", "report_served_mismatch"]

log = logging.getLogger(__name__)


class StaleProbe(Protocol):
    """A probe refused because the served weights changed (``monitor.probe.stale.ProbeStaleError`` fits)."""

    model: str
    probe_version: str
    expected: str  # the fingerprint the probe was trained on
    actual: str  # the served model's fingerprint


class MismatchVerdict(Protocol):
    """The served-model check's state now (``monitor.probe.served_check.MismatchVerdict`` fits)."""

    model: str
    status: Literal["firing", "clear", "partial"]
    metrics: dict[str, Any]
    detector_state: dict[str, Any]
    summary: str


def raise_probe_stale(session: Session, alerts_config: AlertsSettings, stale: StaleProbe, *,
                      model_path: str | None = None, now: datetime | None = None) -> list[Transition]:
    """Fire (or keep firing) the ``probe_stale`` alert for ``stale``; the caller commits."""
    sig = Signal(
        detector=PROBE_STALE.detector, model=stale.model, probe_version=stale.probe_version, status="firing",
        metrics={"probe_fingerprint": stale.expected, "served_fingerprint": stale.actual},
        detector_state={"name": "fingerprint_guard"},
        evidence={"model_path": model_path} if model_path else {},
        summary=str(stale),
    )
    out = evaluate(session, alerts_config, [sig], now or utcnow(), rules=[PROBE_STALE])
    for t in out:
        log.error("%s (alert %s %s)", stale, t.alert_id, t.event)
    return out


def resolve_probe_stale(session: Session, alerts_config: AlertsSettings, model: str, *,
                        now: datetime | None = None) -> int:
    """Resolve firing ``probe_stale`` alerts of ``model`` (its probe is fresh again); returns how many."""
    versions = session.scalars(
        select(Alert.probe_version).where(Alert.rule == PROBE_STALE.name, Alert.model == model, Alert.state == "firing")
    ).all()
    if not versions:
        return 0
    sigs = [Signal(detector=PROBE_STALE.detector, model=model, probe_version=v, status="clear") for v in set(versions)]
    return sum(t.event == "resolved" for t in evaluate(session, alerts_config, sigs, now or utcnow(), rules=[PROBE_STALE]))


def report_served_mismatch(session: Session, alerts_config: AlertsSettings, verdict: MismatchVerdict, *,
                           now: datetime | None = None) -> list[Transition]:
    """Fire, renotify or resolve ``served_model_mismatch`` on ``verdict`` (nothing while it is partial);
    the caller commits."""
    if verdict.status == "partial":
        return []
    sig = Signal(detector=SERVED_MODEL_MISMATCH.detector, model=verdict.model, probe_version=None,
                 status=verdict.status, metrics=verdict.metrics, detector_state=verdict.detector_state,
                 summary=verdict.summary)
    out = evaluate(session, alerts_config, [sig], now or utcnow(), rules=[SERVED_MODEL_MISMATCH])
    for t in out:
        (log.error if t.event != "resolved" else log.info)("%s %s (alert %s): %s", SERVED_MODEL_MISMATCH.name,
                                                           t.event, t.alert_id, verdict.summary)
    return out
