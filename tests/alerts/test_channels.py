"""Channel bodies: webhook = the DESIGN.md payload, Slack incoming-webhook format, Alertmanager v2."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from alerts.channels import CHANNELS, channel_url, register_channel
from alerts.payload import alert_payload, canonical_json, fingerprint, sign, verify_signature
from storage.models import Alert, utcnow


@pytest.fixture
def payload():
    now = utcnow()
    a = Alert(id="a1", fingerprint=fingerprint("r", "m", "v1"), rule="r", state="firing", severity="critical",
              model="m", probe_version="v1", window={"n": 3}, metrics={"auroc": 0.81, "auroc_ci": [0.77, 0.85]},
              detector={"s": 9.5, "h": 8.0}, evidence={"sample_ids": ["x"], "summary": "disagreement up"},
              started_at=now)
    return alert_payload(a, "firing", now, expires_at=now + timedelta(hours=8))


def test_webhook_body_is_canonical_payload(payload):
    body = CHANNELS["webhook"].render(payload)
    assert json.loads(body) == json.loads(canonical_json(payload))
    assert body == canonical_json(json.loads(body))  # sorted, compact: stable bytes to sign
    assert verify_signature(body, sign(body, "k"), "k") and not verify_signature(body, sign(body, "k2"), "k")
    assert not verify_signature(body, None, "k")


def test_slack_format(payload):
    body = json.loads(CHANNELS["slack"].render(payload))
    assert "[FIRING] r" in body["text"] and "disagreement up" in body["text"]
    assert body["blocks"][0]["type"] == "section" and body["blocks"][0]["text"]["type"] == "mrkdwn"


def test_alertmanager_format(payload):
    [item] = json.loads(CHANNELS["alertmanager"].render(payload))
    assert item["labels"]["alertname"] == "r" and item["labels"]["severity"] == "critical"
    assert item["startsAt"] == payload["started_at"] and item["endsAt"] == payload["expires_at"]
    assert channel_url("alertmanager", "http://am:9093/") == "http://am:9093/api/v2/alerts"
    resolved = {**payload, "state": "resolved", "resolved_at": payload["sent_at"]}
    assert json.loads(CHANNELS["alertmanager"].render(resolved))[0]["endsAt"] == payload["sent_at"]


def test_fingerprint_and_registry():
    assert fingerprint("r", "m", "v1") == fingerprint("r", "m", "v1") != fingerprint("r", "m", "v2")

    class Teams:
        path = "/hook"

        def render(self, payload):
            return b"{}"

    register_channel("teams", Teams())
    try:
        assert channel_url("teams", "http://x") == "http://x/hook"
    finally:
        del CHANNELS["teams"]
    with pytest.raises(ValueError, match="unknown alert channel kind 'nope'"):
        channel_url("nope", "http://x")
