"""Alert lifecycle + outbox delivery to a real webhook receiver on loopback."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import select

from alerts.lifecycle import evaluate
from alerts.outbox import deliver_due
from alerts.payload import SIGNATURE_HEADER, verify_signature
from storage.db import session_factory
from storage.models import Alert, AlertDelivery, utcnow

SECRET = "s3cret-for-tests"
DESIGN_FIELDS = {"id", "fingerprint", "rule", "state", "severity", "model", "probe_version", "window",
                 "metrics", "detector", "started_at"}


def _step(factory, cfg, signals, now):
    with factory() as s:
        out = evaluate(s, cfg, signals, now)
        s.commit()
    return out


def test_signed_deduplicated_then_resolved(engine, receiver, make_config, make_signal, monkeypatch):
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    cfg = make_config([{"name": "hook", "kind": "webhook", "url": receiver.url, "secret_env": "TEST_HOOK_SECRET"}])
    factory = session_factory(engine)
    t0 = utcnow()
    # the condition holds for three evaluations: one alert, one notification
    for i in range(3):
        _step(factory, cfg, [make_signal("firing")], t0 + timedelta(seconds=30 * i))
        deliver_due(factory, cfg, now=t0 + timedelta(seconds=30 * i + 1))
    assert len(receiver.requests) == 1
    req = receiver.requests[0]
    assert verify_signature(req.body, req.headers.get(SIGNATURE_HEADER), SECRET)
    assert not verify_signature(req.body + b" ", req.headers.get(SIGNATURE_HEADER), SECRET)
    body = req.json()
    assert DESIGN_FIELDS <= set(body)
    assert body["state"] == "firing" and body["rule"] == "probe_disagreement_drift"
    assert body["severity"] == "critical" and body["model"] == "m1" and body["probe_version"] == "v1"
    assert body["metrics"]["disagreement_ci"] == [0.15, 0.25]
    assert body["evidence"]["sample_ids"] == ["s1", "s2"]
    assert req.headers["Idempotency-Key"]
    # partial evaluations neither fire nor count towards resolving; one clear is not enough (hysteresis)
    t1 = t0 + timedelta(minutes=5)
    _step(factory, cfg, [make_signal("partial")], t1)
    _step(factory, cfg, [make_signal("clear")], t1 + timedelta(seconds=30))
    _step(factory, cfg, [make_signal("firing")], t1 + timedelta(seconds=60))  # resets the clear count
    _step(factory, cfg, [make_signal("clear")], t1 + timedelta(seconds=90))
    deliver_due(factory, cfg, now=t1 + timedelta(seconds=91))
    assert len(receiver.requests) == 1
    _step(factory, cfg, [make_signal("clear")], t1 + timedelta(seconds=120))
    deliver_due(factory, cfg, now=t1 + timedelta(seconds=121))
    assert len(receiver.requests) == 2
    resolved = receiver.requests[1].json()
    assert resolved["state"] == "resolved" and resolved["id"] == body["id"]
    assert resolved["fingerprint"] == body["fingerprint"] and resolved["resolved_at"]
    assert verify_signature(receiver.requests[1].body, receiver.requests[1].headers[SIGNATURE_HEADER], SECRET)
    # a new episode of the same condition is a new alert with the same fingerprint
    _step(factory, cfg, [make_signal("firing")], t1 + timedelta(minutes=10))
    deliver_due(factory, cfg, now=t1 + timedelta(minutes=10, seconds=1))
    third = receiver.requests[2].json()
    assert third["state"] == "firing" and third["id"] != body["id"] and third["fingerprint"] == body["fingerprint"]
    with factory() as s:
        assert s.scalars(select(Alert).where(Alert.state == "firing")).all().__len__() == 1


def test_renotify_and_other_fingerprints(engine, receiver, make_config, make_signal):
    cfg = make_config([{"name": "hook", "kind": "webhook", "url": receiver.url}], renotify_minutes=60)
    factory = session_factory(engine)
    t0 = utcnow()
    _step(factory, cfg, [make_signal("firing"), make_signal("firing", model="m2")], t0)
    deliver_due(factory, cfg, now=t0)
    _step(factory, cfg, [make_signal("firing")], t0 + timedelta(minutes=30))
    _step(factory, cfg, [make_signal("firing")], t0 + timedelta(minutes=61))
    deliver_due(factory, cfg, now=t0 + timedelta(minutes=62))
    events = sorted((r.json()["model"], r.headers["X-Vlmwatch-Event"]) for r in receiver.requests)
    assert events == [("m1", "firing"), ("m1", "renotify"), ("m2", "firing")]
    assert SIGNATURE_HEADER not in receiver.requests[0].headers  # no secret configured


def test_metric_rule_fires_only_when_ci_clears_threshold(engine, receiver, make_config, make_signal):
    rule = {"name": "auroc_low", "detector": "metric", "source": "human", "metric": "auroc", "op": "<", "threshold": 0.8,
            "severity": "warning", "resolve_after": 1}
    cfg = make_config([{"name": "hook", "kind": "webhook", "url": receiver.url}], rules=[rule])
    factory = session_factory(engine)
    t0 = utcnow()
    wide = make_signal("clear", detector="metric", metrics={"auroc": 0.75, "auroc_ci": [0.62, 0.86]})
    assert _step(factory, cfg, [wide], t0) == []
    narrow = make_signal("clear", detector="metric", metrics={"auroc": 0.74, "auroc_ci": [0.71, 0.77]})
    assert [t.event for t in _step(factory, cfg, [narrow], t0 + timedelta(minutes=1))] == ["firing"]
    partial = make_signal("partial", detector="metric", metrics={"auroc": 0.5, "auroc_ci": [0.4, 0.6]})
    assert _step(factory, cfg, [partial], t0 + timedelta(minutes=2)) == []
    ok = make_signal("clear", detector="metric", metrics={"auroc": 0.9, "auroc_ci": [0.87, 0.93]})
    assert [t.event for t in _step(factory, cfg, [ok], t0 + timedelta(minutes=3))] == ["resolved"]


def test_retry_503_three_times_then_one_delivery(engine, receiver, make_config, make_signal):
    receiver.script = [(503, {"Retry-After": "1"})] * 3
    cfg = make_config([{"name": "hook", "kind": "webhook", "url": receiver.url, "timeout_seconds": 5}])
    factory = session_factory(engine)
    _step(factory, cfg, [make_signal("firing")], utcnow())
    deadline = time.monotonic() + 20
    while len(receiver.ok) < 1 and time.monotonic() < deadline:
        deliver_due(factory, cfg)
        time.sleep(0.05)
    for _ in range(3):  # nothing more is sent once delivered
        deliver_due(factory, cfg)
    assert [r.status for r in receiver.requests] == [503, 503, 503, 200]
    assert len({r.headers["Idempotency-Key"] for r in receiver.requests}) == 1
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:])]
    assert all(g >= 0.95 for g in gaps), gaps  # Retry-After: 1 honoured (backoff alone is <= 0.2 s)
    with factory() as s:
        row = s.scalars(select(AlertDelivery)).one()
        assert (row.status, row.attempts) == ("sent", 4)
        assert row.sent_at is not None


def test_gives_up_at_deadline_and_on_client_errors(engine, receiver, make_config, make_signal):
    receiver.default = 503
    cfg = make_config([{"name": "hook", "kind": "webhook", "url": receiver.url}], delivery_deadline_minutes=1)
    factory = session_factory(engine)
    t0 = utcnow()
    _step(factory, cfg, [make_signal("firing")], t0)
    assert deliver_due(factory, cfg, now=t0).retried == 1
    stats = deliver_due(factory, cfg, now=t0 + timedelta(minutes=2))
    assert stats.gave_up == 1 and len(receiver.requests) == 1  # past the deadline: recorded, not sent
    with factory() as s:
        row = s.scalars(select(AlertDelivery)).one()
        assert row.status == "gave_up" and "deadline" in row.last_error and "503" in row.last_error
    receiver.default = 400
    _step(factory, cfg, [make_signal("firing", model="m2")], t0)
    stats = deliver_due(factory, cfg, now=t0 + timedelta(seconds=1))
    assert stats.gave_up == 1 and stats.retried == 0
    with factory() as s:
        bad = s.scalars(select(AlertDelivery).where(AlertDelivery.last_error.like("%400%"))).one()
        assert bad.status == "gave_up" and "not retryable" in bad.last_error


def test_connection_error_is_retried(engine, make_config, make_signal):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    cfg = make_config([{"name": "hook", "kind": "webhook", "url": f"http://127.0.0.1:{port}/x", "timeout_seconds": 2}])
    factory = session_factory(engine)
    t0 = utcnow()
    _step(factory, cfg, [make_signal("firing")], t0)
    stats = deliver_due(factory, cfg, now=t0)
    assert stats.retried == 1
    with factory() as s:
        row = s.scalars(select(AlertDelivery)).one()
        assert row.status == "pending" and "ConnectError" in row.last_error and row.next_attempt_at > t0
