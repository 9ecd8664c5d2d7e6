"""A real Prometheus Alertmanager (Debian's prometheus-alertmanager) accepts vlmwatch alerts."""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import datetime, timedelta

import httpx
import pytest

from alerts.lifecycle import evaluate
from alerts.outbox import deliver_due
from storage.db import session_factory
from storage.models import utcnow

AM_CONFIG = """\
route:
  receiver: blackhole
  group_wait: 1s
receivers:
  - name: blackhole
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def alertmanager(tmp_path, alertmanager_binary):
    binary = alertmanager_binary
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text(AM_CONFIG)
    port = _free_port()
    log = open(tmp_path / "alertmanager.log", "wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={cfg}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"alertmanager did not start: {(tmp_path / 'alertmanager.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()  # the process this fixture started, by its handle
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _ours(base: str, fingerprint: str) -> list[dict]:
    alerts = httpx.get(base + "/api/v2/alerts", timeout=5).json()
    return [a for a in alerts if a["labels"].get("fingerprint") == fingerprint]


def test_alertmanager_accepts_firing_and_resolved(engine, alertmanager, make_config, make_signal):
    cfg = make_config([{"name": "am", "kind": "alertmanager", "url": alertmanager}])
    factory = session_factory(engine)
    now = utcnow()
    with factory() as s:
        [fired] = evaluate(s, cfg, [make_signal("firing")], now)
        s.commit()
    assert deliver_due(factory, cfg, now=now).sent == 1
    [got] = _ours(alertmanager, fired.fingerprint)
    assert got["labels"]["alertname"] == "probe_disagreement_drift"
    assert got["labels"]["severity"] == "critical" and got["labels"]["model"] == "m1"
    assert got["annotations"]["vlmwatch_alert_id"] == fired.alert_id
    assert got["status"]["state"] == "active"
    assert datetime.fromisoformat(got["endsAt"].replace("Z", "+00:00")) > now + timedelta(hours=1)
    # resolve (hysteresis: two clear evaluations) -> Alertmanager sees endsAt in the past
    later = utcnow()
    with factory() as s:
        evaluate(s, cfg, [make_signal("clear")], later)
        events = [t.event for t in evaluate(s, cfg, [make_signal("clear")], later)]
        s.commit()
    assert events == ["resolved"]
    assert deliver_due(factory, cfg, now=later).sent == 1
    time.sleep(0.2)
    left = _ours(alertmanager, fired.fingerprint)
    assert all(datetime.fromisoformat(a["endsAt"].replace("Z", "+00:00")) <= utcnow() for a in left), left
