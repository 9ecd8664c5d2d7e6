"""Alert channels: each turns the alert payload into the request body its receiver expects.

A channel is a one-method Protocol (``render``) plus the path appended to the configured URL;
``CHANNELS`` maps the config ``kind`` to one. Add a kind with :func:`register_channel`.

* ``webhook``: the payload itself as canonical JSON (signed when a secret is configured).
* ``slack``: Slack incoming-webhook format (``text`` + a ``blocks`` section in mrkdwn).
* ``alertmanager``: Prometheus Alertmanager API v2, ``POST <url>/api/v2/alerts`` with a list of
  ``{labels, annotations, startsAt, endsAt, generatorURL}``. A firing alert carries ``endsAt`` =
  ``expires_at`` (twice the renotify interval) so Alertmanager keeps it active between renotifies
  and lets it lapse if vlmwatch goes silent; a resolve sends ``endsAt`` = the resolve time.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Protocol

from alerts.payload import canonical_json

__all__ = ["Channel", "CHANNELS", "register_channel", "channel_url"]


class Channel(Protocol):
    path: str  # appended to the configured URL

    def render(self, payload: Mapping[str, Any]) -> bytes:
        """The exact request body for this receiver."""
        ...


class WebhookChannel:
    path = ""

    def render(self, payload: Mapping[str, Any]) -> bytes:
        return canonical_json(dict(payload))


_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}


class SlackChannel:
    path = ""

    def render(self, payload: Mapping[str, Any]) -> bytes:
        state = str(payload.get("state", "")).upper()
        icon = ":white_check_mark:" if payload.get("state") == "resolved" else _EMOJI.get(str(payload.get("severity")), "")
        task = f", task {payload['task']}" if payload.get("task") else ""
        head = f"{icon} [{state}] {payload.get('rule')} — {payload.get('model')} (probe {payload.get('probe_version')}{task})"
        lines = [head.strip()]
        if payload.get("summary"):
            lines.append(str(payload["summary"]))
        metrics = payload.get("metrics") or {}
        shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or k.endswith("_ci")}
        if shown:
            lines.append("```" + json.dumps(shown, sort_keys=True)[:2500] + "```")
        lines.append(f"fingerprint `{payload.get('fingerprint')}` · started {payload.get('started_at')}")
        text = "\n".join(lines)
        return canonical_json({"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]})


class AlertmanagerChannel:
    path = "/api/v2/alerts"

    def render(self, payload: Mapping[str, Any]) -> bytes:
        labels = {
            "alertname": str(payload.get("rule")),
            "severity": str(payload.get("severity")),
            "model": str(payload.get("model")),
            "probe_version": str(payload.get("probe_version") or ""),
            "fingerprint": str(payload.get("fingerprint")),
            "source": "vlmwatch",
        }
        if payload.get("task"):  # a task slice's alert: its own label set, so Alertmanager keeps it apart
            labels["task"] = str(payload["task"])
        annotations = {
            "summary": str(payload.get("summary") or f"{payload.get('rule')} on {payload.get('model')}"),
            "vlmwatch_alert_id": str(payload.get("id")),
            "metrics": canonical_json(payload.get("metrics") or {}).decode()[:4000],
            "detector": canonical_json(payload.get("detector") or {}).decode()[:4000],
        }
        ends = payload.get("resolved_at") if payload.get("state") == "resolved" else payload.get("expires_at")
        item: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": payload.get("started_at")}
        if ends:
            item["endsAt"] = ends
        return canonical_json([item])


CHANNELS: dict[str, Channel] = {
    "webhook": WebhookChannel(),
    "slack": SlackChannel(),
    "alertmanager": AlertmanagerChannel(),
}


def register_channel(kind: str, channel: Channel) -> None:
    """Make a channel kind available to the outbox (config ``alerts.channels[].kind``)."""
    CHANNELS[kind] = channel


def channel_url(kind: str, base_url: str) -> str:
    """Where a channel of ``kind`` configured with ``base_url`` posts to."""
    try:
        path = CHANNELS[kind].path
    except KeyError:
        raise ValueError(f"unknown alert channel kind {kind!r}; known: {sorted(CHANNELS)}") from None
    return base_url.rstrip("/") + path if path else base_url
