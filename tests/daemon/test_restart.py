"""The daemon survives kill -9 and SIGTERM without losing or double-counting work; one per SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.daemon.helpers import (
    PY,
    ROOT,
    add_probe_version,
    count,
    free_port,
    ingest,
    rows,
    sqlite_db,
    start_test_daemon,
    wait_for,
)

N = 600


def _scored(url: str) -> int:
    return count(url, "SELECT COUNT(*) FROM samples WHERE status = 'scored'")


class _LabelPoster(threading.Thread):
    """Posts labels by response id, each twice (a client retrying), through whichever daemon's
    API is up; connection errors while a daemon is dead are retried."""

    def __init__(self, port: int, ids: range) -> None:
        super().__init__(daemon=True)
        self.port, self.ids = port, ids
        self.posted = 0
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 600
        for i in self.ids:
            for _ in range(2):
                while time.monotonic() < deadline:
                    try:
                        r = httpx.post(f"http://127.0.0.1:{self.port}/v1/labels", timeout=5,
                                       json={"response_id": f"chatcmpl-{i:05d}", "correct": i % 3 != 0,
                                             "source": "ground_truth"})
                    except httpx.HTTPError:
                        time.sleep(0.2)
                        continue
                    if r.status_code != 200:
                        self.error = r.text
                        return
                    self.posted += 1
                    break
            time.sleep(0.05)


class _Receiver:
    """A slow webhook receiver on loopback that records each request's Idempotency-Key."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        keys: list[str] = []
        self.keys = keys

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(0.5)  # deliveries are still in flight when the daemons are killed
                keys.append(self.headers.get("Idempotency-Key") or "")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _queue_alerts(url: str, hook_url: str, n: int) -> None:
    """n firing alerts, each with one outbox row for channel 'hook' (what the detect job writes)."""
    from alerts.outbox import enqueue
    from monitor.config import Settings
    from storage.db import make_engine, session_factory
    from storage.models import Alert, utcnow

    cfg = Settings(alerts={"channels": [{"name": "hook", "kind": "webhook", "url": hook_url}]}).alerts
    eng = make_engine(url)
    with session_factory(eng)() as s:
        now = utcnow()
        for i in range(n):
            a = Alert(id=f"al{i}", fingerprint=f"fp{i}", rule="probe_disagreement_drift", state="firing",
                      severity="critical", model="m", started_at=now)
            s.add(a)
            s.flush()
            enqueue(s, cfg, a, "firing", now)
        s.commit()
    eng.dispose()


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_kill9_restart_loses_nothing_and_double_counts_nothing(tmp_path: Path) -> None:
    url = sqlite_db(tmp_path)
    add_probe_version(url)
    assert len(ingest(url, N)) == N
    hook = _Receiver()
    _queue_alerts(url, hook.url, 30)
    port = free_port()
    poster = _LabelPoster(port, range(60))
    poster.start()
    kills = 0
    # three daemons in turn, each SIGKILLed mid-run (mid-batch: the scorer sleeps inside a batch)
    for gen in range(3):
        target = _scored(url) + 40
        proc = start_test_daemon(url, tmp_path, f"w{gen}", delay=0.3, api_port=port, extra=["--webhook", hook.url])
        try:
            wait_for(lambda: _scored(url) >= target, 180, f"{target} scored samples")
            time.sleep(0.1)  # land inside the next batch
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
        assert _scored(url) < N, "the daemon finished before it was killed: the test proves nothing"
    # samples the killed daemons had claimed are leased to them in the database right now
    assert count(url, "SELECT COUNT(*) FROM samples WHERE lease_owner IS NOT NULL AND status='pending'") > 0
    # a fresh daemon continues (the lock files of killed daemons do not block it)
    proc = start_test_daemon(url, tmp_path, "final", delay=0.0, api_port=port, extra=["--webhook", hook.url])
    try:
        wait_for(lambda: _scored(url) == N, 240, "all samples scored")
        wait_for(lambda: count(url, "SELECT COUNT(*) FROM alert_deliveries WHERE status='sent'") == 30, 120,
                 "all deliveries sent")
        poster.join(300)
        assert poster.error is None, poster.error
        assert poster.posted == 120
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) in (0, 1)  # 1: a slow leader job was abandoned at the shutdown timeout
    assert kills == 3
    assert count(url, "SELECT COUNT(*) FROM scores") == N
    assert count(url, "SELECT COUNT(DISTINCT sample_id) FROM scores") == N
    assert count(url, "SELECT COUNT(*) FROM samples WHERE status != 'scored'") == 0
    assert count(url, "SELECT COUNT(*) FROM samples WHERE lease_owner IS NOT NULL") == 0
    assert count(url, "SELECT COUNT(*) FROM labels") == 60
    assert count(url, "SELECT COUNT(DISTINCT response_id) FROM labels") == 60
    assert count(url, "SELECT COUNT(*) FROM labels WHERE sample_id IS NULL") == 0
    # the outbox: every delivery row sent, none added or lost; the receiver saw every key, and a
    # key twice only when a daemon died between the receiver's answer and the commit (at least once)
    assert count(url, "SELECT COUNT(*) FROM alert_deliveries") == 30
    assert count(url, "SELECT COUNT(*) FROM alerts") == 30
    keys = list(hook.keys)
    assert len(set(keys)) == 30
    assert len(keys) - 30 <= kills
    assert count(url, "SELECT COUNT(*) FROM labels WHERE correct = (CAST(SUBSTR(response_id, 10) AS INTEGER) % 3 != 0)") == 60
    # every sample was scored by someone; re-scoring happened only for batches in flight at a kill
    logs = [p.read_text().split() for p in sorted(tmp_path.glob("scored-*.txt"))]
    seen = [sid for log in logs for sid in log]
    assert set(seen) == {f"s{i:05d}" for i in range(N)}
    assert len(seen) - N <= 3 * 8, "more re-scoring than the three in-flight batches"
    # the database's score is the deterministic one, whoever wrote it
    from tests.daemon.helpers import hash_score

    for sid, p in rows(url, "SELECT sample_id, p_correct FROM scores"):
        assert abs(p - hash_score(sid)) < 1e-9


def test_second_daemon_on_sqlite_refuses_to_start(tmp_path: Path) -> None:
    url = sqlite_db(tmp_path)
    add_probe_version(url)
    first = start_test_daemon(url, tmp_path, "first", extra=["--stub-leader-jobs"])
    try:
        lock = Path(url.removeprefix("sqlite:///") + ".daemon.lock")
        wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), 30, "the daemon lock")
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(f"storage:\n  url: {url}\ndaemon:\n  start_api: false\n")
        t0 = time.monotonic()
        second = subprocess.run([PY, "-m", "monitor.cli", "--config", str(cfg), "daemon"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert second.returncode == 3, second.stderr
        assert "already running" in second.stderr and str(first.pid) in second.stderr, second.stderr
        assert "PostgreSQL" in second.stderr  # says what to do instead
        assert time.monotonic() - t0 < 30
        assert first.poll() is None  # the first one is unaffected
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    # once the first has stopped, a new one starts fine (and stops on SIGTERM)
    again = start_test_daemon(url, tmp_path, "again", extra=["--stub-leader-jobs"])
    try:
        wait_for(lambda: "started" in (tmp_path / "again.log").read_text(), 30, "the second daemon to start")
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0


def test_sigterm_mid_batch_exits_in_time_and_releases_leases(tmp_path: Path) -> None:
    url = sqlite_db(tmp_path)
    add_probe_version(url)
    ingest(url, 64, images=False)
    # each batch of 8 takes 2 s; shutdown budget 5 s
    proc = start_test_daemon(url, tmp_path, "slow", delay=2.0, extra=["--shutdown-timeout", "5", "--stub-leader-jobs"])
    try:
        wait_for(lambda: count(url, "SELECT COUNT(*) FROM samples WHERE lease_owner IS NOT NULL") > 0, 30, "a claim")
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0
    assert took < 5 + 3, f"shutdown took {took:.1f}s"
    # the batch in flight was finished (scored) and nothing else stays leased
    assert _scored(url) == 8
    assert count(url, "SELECT COUNT(*) FROM samples WHERE lease_owner IS NOT NULL") == 0
    log = (tmp_path / "slow.log").read_text()
    assert "stopped (clean)" in log
