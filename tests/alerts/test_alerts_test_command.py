"""`vlmwatch alerts test` posts one signed test notification to each configured channel, now."""

from __future__ import annotations

import json

from alerts.payload import verify_signature


def test_sends_a_signed_test_alert_to_every_channel_and_reports_failures(receiver, vlmwatch_cli, tmp_path):
    receiver.script = [(200, {}), (503, {})]
    cfg = tmp_path / "vlmwatch.yaml"
    cfg.write_text(json.dumps({"alerts": {"channels": [
        {"name": "oncall", "kind": "webhook", "url": receiver.url, "secret_env": "HOOK_SECRET"},
        {"name": "slack", "kind": "slack", "url": receiver.url},
        {"name": "nobody", "kind": "webhook", "url": "http://127.0.0.1:9/none", "timeout_seconds": 2},
    ]}}))
    res = vlmwatch_cli("--config", str(cfg), "alerts", "test", "--json", env={"HOOK_SECRET": "s3cret"})
    assert res.returncode == 1, res.stderr  # one channel answered 503, one did not answer
    results = {r["channel"]: r for r in json.loads(res.stdout)}
    assert (results["oncall"]["ok"], results["oncall"]["status"]) == (True, 200)
    assert (results["slack"]["ok"], results["slack"]["status"]) == (False, 503)
    assert results["nobody"]["ok"] is False and results["nobody"]["status"] is None and results["nobody"]["error"]
    hook, slack = receiver.requests
    body = hook.json()
    assert (body["rule"], body["event"], body["severity"], body["state"]) == ("vlmwatch_test", "test", "info", "firing")
    assert verify_signature(hook.body, hook.headers["X-Vlmwatch-Signature"], "s3cret")
    assert hook.headers["Idempotency-Key"] == body["id"] and hook.headers["X-Vlmwatch-Event"] == "test"
    assert "vlmwatch_test" in json.dumps(slack.json())  # rendered the Slack way

    one = vlmwatch_cli("--config", str(cfg), "alerts", "test", "--channel", "oncall", env={"HOOK_SECRET": "s3cret"})
    assert one.returncode == 0, one.stderr
    assert "oncall (webhook" in one.stdout and "ok, HTTP 200" in one.stdout and len(receiver.requests) == 3
    assert "HTTP Request" not in one.stderr  # no httpx INFO line per request


def test_no_channel_is_a_clear_refusal(vlmwatch_cli, tmp_path):
    res = vlmwatch_cli("alerts", "test")
    assert res.returncode == 2 and "no alert channels configured" in res.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text('{"alerts": {"channels": [{"name": "a", "url": "http://127.0.0.1:9/"}]}}')
    res = vlmwatch_cli("--config", str(cfg), "alerts", "test", "--channel", "b")
    assert res.returncode == 2 and "no channel named 'b'" in res.stderr and "configured: a" in res.stderr
