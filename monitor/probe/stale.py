"""Stale-probe guard: a probe is only used on the exact model (fingerprint) it was trained on.

A new deploy of a served model changes its fingerprint (hash of config and weights). From then on
its active probe reads hidden states it has never seen; rather than emit confident nonsense,
scoring for that model stops and a ``probe_stale`` alert fires until a probe trained on the new
model is activated.

The alert row is written straight into ``alerts`` through the storage models (the alerts package
had no public API for raising an alert from outside its detectors when this was written); a
still-firing alert with the same fingerprint is refreshed rather than duplicated.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Alert, utcnow

__all__ = ["ProbeStaleError", "STALE_RULE", "check_fresh", "raise_probe_stale"]

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


def _fingerprint(model: str) -> str:
    return hashlib.sha256(f"{STALE_RULE}|{model}".encode()).hexdigest()


def raise_probe_stale(session: Session, err: ProbeStaleError, *, model_path: str | None = None) -> Alert:
    """Write (or refresh) the firing ``probe_stale`` alert for ``err.model``. The caller commits."""
    fp = _fingerprint(err.model)
    now = utcnow()
    metrics: dict[str, Any] = {"probe_fingerprint": err.expected, "served_fingerprint": err.actual}
    alert = session.scalars(
        select(Alert).where(Alert.fingerprint == fp, Alert.state == "firing")
    ).first()
    if alert is None:
        alert = Alert(
            id=uuid.uuid4().hex,
            fingerprint=fp,
            rule=STALE_RULE,
            state="firing",
            severity="critical",
            model=err.model,
            probe_version=err.probe_version,
            started_at=now,
            clear_count=0,
        )
        session.add(alert)
        log.error("%s", err)
    alert.probe_version = err.probe_version
    alert.metrics = metrics
    alert.detector = {"name": "fingerprint_guard"}
    alert.evidence = {"model_path": model_path} if model_path else None
    alert.updated_at = now
    session.flush()
    return alert


def check_fresh(model: str, probe_version: str, probe_fingerprint: str, served_fingerprint: str) -> None:
    """Raise :class:`ProbeStaleError` unless the two fingerprints are equal."""
    if probe_fingerprint != served_fingerprint:
        raise ProbeStaleError(model, probe_version, probe_fingerprint, served_fingerprint)
