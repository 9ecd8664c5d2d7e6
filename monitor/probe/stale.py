"""Stale-probe guard: a probe is only used on the exact model (fingerprint) it was trained on.

A new deploy of a served model changes its fingerprint (hash of config and weights). From then on
its active probe would read hidden states it has never seen; rather than emit confident nonsense,
scoring for that model stops and a ``probe_stale`` alert fires until a probe trained on the new
model is activated (the next successful scorer load resolves it).

Alerts go through the alerts package's lifecycle (``alerts.lifecycle.evaluate``) with a built-in
rule, so they get its dedupe (one firing alert per rule + model + probe version), renotify and an
outbox row per configured channel, like every other alert.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.builtin import BuiltinRule, builtin_config
from storage.models import Alert, utcnow

__all__ = ["ProbeStaleError", "STALE_RULE", "check_fresh", "raise_probe_stale", "resolve_probe_stale"]

log = logging.getLogger(__name__)

STALE_RULE = "probe_stale"


class ProbeStaleError(RuntimeError):
    """The served model's fingerprint differs from the one its probe was trained on."""

    def __init__(self, model: str, probe_version: str, expected: str, actual: str) -> None:
        super().__init__(
            f"probe {probe_version} of model {model!r} is stale: it was trained on model fingerprint "
            f"{expected[:12]}…, the served model is {actual[:12]}…; train and activate a new probe"
        )
        self.model, self.probe_version, self.expected, self.actual = model, probe_version, expected, actual


_RULE = BuiltinRule(STALE_RULE)


def raise_probe_stale(session: Session, err: ProbeStaleError, *, alerts_config: Any | None = None,
                      model_path: str | None = None, now: datetime | None = None) -> None:
    """Fire (or keep firing) the ``probe_stale`` alert for ``err``; the caller commits."""
    from alerts.lifecycle import Signal, evaluate

    sig = Signal(
        detector=STALE_RULE, model=err.model, probe_version=err.probe_version, status="firing",
        metrics={"probe_fingerprint": err.expected, "served_fingerprint": err.actual},
        detector_state={"name": "fingerprint_guard"},
        evidence={"model_path": model_path} if model_path else {},
        summary=str(err),
    )
    for t in evaluate(session, builtin_config(_RULE, alerts_config), [sig], now or utcnow()):
        log.error("%s (alert %s %s)", err, t.alert_id, t.event)


def resolve_probe_stale(session: Session, model: str, *, alerts_config: Any | None = None,
                        now: datetime | None = None) -> int:
    """Resolve firing ``probe_stale`` alerts of ``model`` (its probe is fresh again); returns how many."""
    from alerts.lifecycle import Signal, evaluate

    versions = session.scalars(
        select(Alert.probe_version).where(Alert.rule == STALE_RULE, Alert.model == model, Alert.state == "firing")
    ).all()
    if not versions:
        return 0
    sigs = [Signal(detector=STALE_RULE, model=model, probe_version=v, status="clear") for v in set(versions)]
    return sum(t.event == "resolved" for t in evaluate(session, builtin_config(_RULE, alerts_config), sigs, now or utcnow()))


def check_fresh(model: str, probe_version: str, probe_fingerprint: str, served_fingerprint: str) -> None:
    """Raise :class:`ProbeStaleError` unless the two fingerprints are equal."""
    if probe_fingerprint != served_fingerprint:
        raise ProbeStaleError(model, probe_version, probe_fingerprint, served_fingerprint)
