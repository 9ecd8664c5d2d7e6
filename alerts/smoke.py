"""``vlmwatch alerts test``: one test notification straight to each configured channel.

The body is what a real alert of rule ``vlmwatch_test`` (severity ``info``, event ``test``) would
carry, rendered by the channel, with the same headers and signature as an outbox delivery; it is
sent once, now, without the outbox (nothing is stored), so an operator sees at once whether each
receiver accepts it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from alerts.channels import CHANNELS, channel_url
from alerts.outbox import request_headers
from alerts.payload import alert_payload, fingerprint
from alerts.settings import AlertsSettings
from storage.models import Alert, utcnow

__all__ = ["TEST_RULE", "ChannelCheck", "send_test_alert"]

TEST_RULE = "vlmwatch_test"


@dataclass
class ChannelCheck:
    channel: str
    kind: str
    url: str
    ok: bool
    status: int | None
    error: str | None


def _test_payload(model: str) -> dict[str, Any]:
    now = utcnow()
    alert = Alert(id=f"test-{uuid.uuid4().hex[:16]}", fingerprint=fingerprint(TEST_RULE, model, None), rule=TEST_RULE,
                  state="firing", severity="info", model=model, probe_version=None, window=None, metrics=None,
                  detector=None, evidence={"summary": "test notification from `vlmwatch alerts test`; no action needed"},
                  started_at=now, resolved_at=None)
    return alert_payload(alert, "test", now)


def send_test_alert(config: AlertsSettings, model: str = "vlmwatch-test", channel: str | None = None) -> list[ChannelCheck]:
    """Send a test notification to every channel in ``config.channels`` (or only ``channel``)."""
    payload = _test_payload(model)
    out = []
    with httpx.Client() as http:
        for ch in config.channels:
            if channel is not None and ch.name != channel:
                continue
            if ch.kind not in CHANNELS:
                out.append(ChannelCheck(ch.name, ch.kind, ch.url, False, None, f"unknown channel kind {ch.kind!r}"))
                continue
            body = CHANNELS[ch.kind].render(payload)
            url = channel_url(ch.kind, ch.url)
            try:
                resp = http.post(url, content=body, headers=request_headers(ch, payload["id"], "test", body, utcnow()),
                                 timeout=float(ch.timeout_seconds))
            except httpx.TransportError as exc:
                out.append(ChannelCheck(ch.name, ch.kind, url, False, None, f"{type(exc).__name__}: {exc}"))
                continue
            ok = 200 <= resp.status_code < 300
            out.append(ChannelCheck(ch.name, ch.kind, url, ok, resp.status_code, None if ok else resp.text[:200]))
    return out
