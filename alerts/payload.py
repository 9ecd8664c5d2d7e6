"""The alert payload (DESIGN.md "Alerts"), its canonical JSON bytes, and the HMAC signature.

The body is rendered once, when the notification is queued, and stored in the outbox row; the
signature is computed at send time, for each attempt, so the secret never reaches storage:
``X-Vlmwatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` (the scheme of
Stripe and Slack). Signing the attempt's timestamp with the body lets a receiver refuse a captured
request replayed later: :func:`verify_signature` accepts it only within ``tolerance_seconds`` of
its own clock. Several ``v1=`` entries may appear (secret rotation); any one matching suffices.
Deliveries are at least once, so a receiver still deduplicates by ``Idempotency-Key``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime
from typing import Any

from storage.models import Alert

__all__ = [
    "SIGNATURE_HEADER",
    "SIGNATURE_TOLERANCE_SECONDS",
    "alert_payload",
    "canonical_json",
    "fingerprint",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Vlmwatch-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300  # receivers refuse signatures further than this from their clock


def fingerprint(rule: str, model: str, probe_version: str | None, task: str | None = None) -> str:
    """Stable identity of an alert condition: rule + model + probe version (+ task, for a task slice's
    alert: distinct from the overall one, which keeps the fingerprint it had before tasks existed)."""
    parts = (rule, model, probe_version or "") + ((task,) if task else ())
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat().replace("+00:00", "Z") if ts is not None else None


def alert_payload(alert: Alert, event: str, now: datetime, expires_at: datetime | None = None) -> dict[str, Any]:
    """The JSON object every channel starts from. ``event`` is firing | resolved | renotify."""
    return {
        "id": alert.id,
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "state": alert.state,
        "event": event,
        "severity": alert.severity,
        "model": alert.model,
        "probe_version": alert.probe_version,
        "task": alert.task,  # the task slice (collectors.tasks); null: the overall alert
        "window": alert.window,
        "metrics": alert.metrics,
        "detector": alert.detector,
        "evidence": alert.evidence,
        "summary": (alert.evidence or {}).get("summary"),
        "started_at": _iso(alert.started_at),
        "resolved_at": _iso(alert.resolved_at),
        "sent_at": _iso(now),
        "expires_at": _iso(expires_at),
    }


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return _iso(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def canonical_json(obj: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON: the exact bytes that are signed and sent."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default, allow_nan=False).encode()


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``X-Vlmwatch-Signature`` value ``t=<timestamp>,v1=<hex>`` (``timestamp``: now, unix seconds)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_mac(secret, t, body)}"


def verify_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance_seconds: float = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs ``body`` under ``secret`` with a timestamp within ``tolerance_seconds``
    of ``now`` (default: this clock). Constant-time comparison."""
    if not header:
        return False
    t: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            t = int(value)
        elif key == "v1":
            macs.append(value)
    if t is None or not macs:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_seconds:
        return False
    expected = _mac(secret, t, body)
    return any(hmac.compare_digest(expected, m) for m in macs)
