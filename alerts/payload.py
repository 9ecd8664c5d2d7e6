"""The alert payload (DESIGN.md "Alerts"), its canonical JSON bytes, and the HMAC signature.

The body is rendered once, when the notification is queued, and stored in the outbox row; the
signature is computed at send time over exactly those bytes, so the secret never reaches storage.
Receivers verify ``X-Vlmwatch-Signature: sha256=<hex>`` with :func:`verify_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from storage.models import Alert

__all__ = [
    "SIGNATURE_HEADER",
    "alert_payload",
    "canonical_json",
    "fingerprint",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Vlmwatch-Signature"


def fingerprint(rule: str, model: str, probe_version: str | None) -> str:
    """Stable identity of an alert condition: rule + model + probe version."""
    raw = "\x00".join((rule, model, probe_version or ""))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


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


def sign(body: bytes, secret: str) -> str:
    """``sha256=<hex>`` HMAC-SHA256 of ``body`` under ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """Constant-time check of a ``X-Vlmwatch-Signature`` header value."""
    return bool(header) and hmac.compare_digest(sign(body, secret), header or "")
