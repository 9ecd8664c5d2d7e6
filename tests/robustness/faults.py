"""Fault injection on real processes (shared by the tests and ``bench/robustness.py``; imported as
``tests.robustness.faults``).

Each scenario runs real components against a real fault and returns its figures: samples
``accepted`` (fsync'd by the spool, the collector's promise), ``stored``, ``lost``, ``duplicated``
(rows beyond one per accepted sample) and, for delivery, deliveries ``expected`` / ``made`` /
``duplicated`` (2xx answers beyond one per outbox row: the receiver may *see* a retried body, which
is the documented at-least-once, but acknowledges each once). ``recovered`` says the same component
object (no restart) finished the work after the fault ended.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

__all__ = ["SCENARIOS", "spool_disk_full", "shipper_kill9_before_cursor", "pg_killed_while_shipping",
           "pg_killed_while_scoring",
           "webhook_receiver_hostile", "pg_killed_while_delivering"]

_ROOT = Path(__file__).resolve().parents[2]


def _sample_bytes(tag: str, i: int, image: bytes) -> bytes:
    from collectors.sample import CollectedImage, CollectedSample
    from collectors.exchange import check_image_bytes

    img: CollectedImage = check_image_bytes(image, 10**6)
    return CollectedSample(id=f"{tag}-{i}", source="proxy", ts=datetime.now(timezone.utc), model="m",
                           route="/v1/chat/completions", prompt=f"{tag} prompt {i}", answer="yes",
                           image=img).to_bytes()


def _png() -> bytes:
    from tests.robustness.fuzz import png

    return png(8)


def _counts(engine: Engine, tag: str) -> tuple[int, int]:
    """(rows, distinct prompts) of the samples of scenario ``tag``."""
    from storage.models import Sample

    with engine.connect() as c:
        q = select(func.count(), func.count(Sample.prompt.distinct())).where(Sample.prompt.like(f"{tag} prompt %"))
        rows, distinct = c.execute(q).one()
    return int(rows), int(distinct)


def _figures(engine: Engine, tag: str, accepted: int, **more: Any) -> dict[str, Any]:
    rows, distinct = _counts(engine, tag)
    return {"samples_accepted": accepted, "samples_stored": rows, "samples_lost": accepted - distinct,
            "samples_duplicated": rows - distinct, **more}


def _ship_all(spool: Path, engine: Engine, timeout: float = 60) -> Any:
    from collectors.shipper import Shipper

    shipper = Shipper(spool, str(engine.url), engine=engine, batch=50)
    try:
        assert shipper.wait_idle(timeout), "the shipper did not drain the spool"
    finally:
        shipper.stop()
    return shipper


def _run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


# --- the spool's disk fills up -------------------------------------------------------------------

_DISK_FULL_CHILD = r"""
import json, resource, signal, sys
from collectors.metrics import CollectorMetrics
from collectors.pipeline import Pipeline
from collectors.spool import SpoolWriter
from collectors.sample import CollectedSample
from tests.robustness.faults import _sample_bytes, _png

spool, limit, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
metrics = CollectorMetrics("proxy")
writer = SpoolWriter(spool, "proxy", max_bytes=100_000_000, segment_bytes=50_000_000)
pipe = Pipeline(build=CollectedSample.from_bytes, sink=writer, metrics=metrics, queue_size=10_000, name="proxy")
img = _png()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # the disk is full past `limit` bytes
for i in range(n):
    pipe.offer(_sample_bytes("diskfull", i, img))
    pipe.flush(10)
full = metrics.dropped_count("spool_error")
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space is freed: the same writer goes on
for i in range(n, 2 * n):
    pipe.offer(_sample_bytes("diskfull", i, img))
    pipe.flush(10)
pipe.close()
writer.close()
spooled = metrics.registry.get_sample_value("vlmwatch_collector_samples_spooled_total", {"source": "proxy"})
print(json.dumps({"accepted": int(spooled), "refused_disk_full": int(full),
                  "refused_after": int(metrics.dropped_count("spool_error") - full)}))
"""


def spool_disk_full(tmp: Path, engine: Engine, n: int = 60) -> dict[str, Any]:
    """The spool's file size limit (RLIMIT_FSIZE in a child process) is hit mid-traffic, then lifted."""
    spool = tmp / "spool-diskfull"
    proc = _run_child(_DISK_FULL_CHILD, str(spool), "20000", str(n))
    assert proc.returncode == 0, proc.stderr[-3000:]
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    _ship_all(spool, engine)
    return _figures(engine, "diskfull", child["accepted"], samples_offered=2 * n,
                    refused_while_full=child["refused_disk_full"], refused_after_space_freed=child["refused_after"],
                    recovered=child["refused_after"] == 0 and child["accepted"] >= n)


# --- kill -9 of the shipper between its write and its cursor update ------------------------------

_KILL_BEFORE_CURSOR_CHILD = r"""
import os, signal, sys
from collectors.shipper import Shipper
from collectors.spool import SpoolReader

def die(self, pos):  # the batch is committed to storage; the cursor is not moved yet
    os.kill(os.getpid(), signal.SIGKILL)

SpoolReader.commit = die
Shipper(sys.argv[1], sys.argv[2], batch=int(sys.argv[3])).ship_once()
"""


def shipper_kill9_before_cursor(tmp: Path, engine: Engine, n: int = 120, batch: int = 50) -> dict[str, Any]:
    """The shipper process is SIGKILLed right after storage committed a batch, before the cursor moved."""
    from collectors.spool import SpoolWriter

    spool = tmp / "spool-kill9"
    img = _png()
    writer = SpoolWriter(spool, "proxy", max_bytes=100_000_000)
    accepted = writer.append([_sample_bytes("kill9", i, img) for i in range(n)])
    writer.close()
    url = engine.url.render_as_string(hide_password=False)
    proc = _run_child(_KILL_BEFORE_CURSOR_CHILD, str(spool), url, str(batch))
    killed = proc.returncode == -9
    stored_at_kill = _counts(engine, "kill9")[0]
    shipper = _ship_all(spool, engine)  # a new shipper on the same spool: re-ships the batch, stores it once
    return _figures(engine, "kill9", accepted, killed_by_sigkill=killed, stored_when_killed=stored_at_kill,
                    reshipped_duplicates_ignored=stored_at_kill, recovered=shipper.shipped == accepted - stored_at_kill)


# --- PostgreSQL connections killed (pg_terminate_backend) ----------------------------------------


class _BackendKiller:
    """Terminates every other connection to the database, ``times`` times, ``every`` seconds apart."""

    def __init__(self, engine: Engine, times: int, every: float) -> None:
        self.engine, self.times, self.every = engine, times, every
        self.terminated = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        killer = create_engine(self.engine.url, poolclass=NullPool)
        try:
            for _ in range(self.times):
                time.sleep(self.every)
                with killer.connect() as c:
                    self.terminated += len(c.execute(text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")).all())
        finally:
            killer.dispose()

    def __enter__(self) -> _BackendKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._thread.join(60)


def pg_killed_while_shipping(tmp: Path, engine: Engine, n: int = 400) -> dict[str, Any]:
    """Every storage connection is terminated repeatedly while the shipper thread drains a growing spool."""
    from collectors.shipper import Shipper
    from collectors.spool import SpoolWriter

    spool = tmp / "spool-pgkill"
    img = _png()
    writer = SpoolWriter(spool, "proxy", max_bytes=100_000_000)
    shipper = Shipper(spool, str(engine.url), engine=engine, batch=20, interval=0.02, max_backoff=0.2).start()
    accepted = 0
    try:
        with _BackendKiller(engine, times=8, every=0.15) as killer:
            for start in range(0, n, 20):
                accepted += writer.append([_sample_bytes("pgship", i, img) for i in range(start, start + 20)])
                time.sleep(0.03)
        deadline = time.monotonic() + 60
        while _counts(engine, "pgship")[1] < accepted and time.monotonic() < deadline:
            time.sleep(0.1)
        recovered = _counts(engine, "pgship")[1] == accepted
    finally:
        shipper.stop()
        writer.close()
    return _figures(engine, "pgship", accepted, connections_terminated=killer.terminated,
                    failed_rounds=int(shipper.metrics.ship_errors._value.get()), recovered=recovered)


def pg_killed_while_scoring(tmp: Path, engine: Engine, n: int = 150) -> dict[str, Any]:
    """Storage connections are terminated repeatedly while the daemon's score job claims, scores and
    stores batches (a deterministic scorer stands in for the model: the faults are storage's)."""
    from monitor.config import Settings
    from monitor.daemon.runner import JobContext
    from monitor.daemon.scoring import ScoreJob
    from monitor.probe.score_result import ScoreResult
    from storage.db import session_factory
    from storage.models import Sample, Score
    from tests.daemon.helpers import add_probe_version, hash_score, ingest

    url = engine.url.render_as_string(hide_password=False)
    pid = add_probe_version(url)
    ids = sorted(ingest(url, n, start=int(time.time() * 1000) % 10**9 * 1000, images=False))  # ids of its own
    accepted = len(ids)

    class Scorer:
        probe_version_id = pid

        def score(self, items: Any) -> list[ScoreResult]:
            time.sleep(0.01)  # a model's time, so kills land mid-batch too
            return [ScoreResult(hash_score(it.sample_id)) for it in items]

    settings = Settings(storage={"url": url}, models={"m": {"path": "-"}},
                        scoring={"batch_size": 10, "lease_seconds": 1})
    job = ScoreJob(settings, lambda *a: Scorer(), max_attempts=1000)
    sessions = session_factory(engine)
    failed_runs = 0

    def scored() -> tuple[int, int]:
        with engine.connect() as c:
            return tuple(c.execute(select(func.count(), func.count(Score.sample_id.distinct()))
                                   .where(Score.sample_id.in_(ids))).one())  # type: ignore[return-value]

    with _BackendKiller(engine, times=10, every=0.1) as killer:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                job(JobContext("score", "fault", sessions, 30.0, threading.Event()))
                if scored()[1] >= accepted:
                    break
            except Exception:  # the runner logs a failed run and runs the job again
                failed_runs += 1
            time.sleep(0.02)
    failed_runs += _swallowed_db_errors()
    while scored()[1] < accepted and time.monotonic() < deadline:  # after the kills: leases expire, all score
        job(JobContext("score", "fault", sessions, 30.0, threading.Event()))
        time.sleep(0.2)
    rows, distinct = scored()
    with engine.connect() as c:
        status = dict(c.execute(select(Sample.status, func.count()).where(Sample.id.in_(ids))
                                .group_by(Sample.status)).all())
    return {"samples_accepted": accepted, "samples_scored": distinct, "samples_lost": accepted - distinct,
            "samples_duplicated": rows - distinct, "sample_status": status, "connections_terminated": killer.terminated,
            "failed_job_runs": failed_runs, "recovered": distinct == accepted and status.get("scored") == accepted}


# --- webhook deliveries --------------------------------------------------------------------------


class HostileReceiver(socketserver.ThreadingTCPServer):
    """A webhook receiver on loopback whose answers follow ``script`` (one entry per connection):
    ``hang`` (reads the request, never answers), ``reset`` (reads it, then RST), ``500``; then 200."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script: list[str], fail_500_for: float = 0.0) -> None:
        self.script = list(script)
        self.fail_500_until = 0.0
        self.fail_500_for = fail_500_for
        self.seen: list[tuple[str, str]] = []  # (idempotency key, what we answered)
        self.lock = threading.Lock()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _HostileHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hook"

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()

    def acknowledged(self) -> Counter[str]:
        return Counter(k for k, what in self.seen if what == "200")


class _HostileHandler(socketserver.StreamRequestHandler):
    server: HostileReceiver

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            head += chunk
        header, _, body = head.partition(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in header.split(b"\r\n")[1:] if b":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        length = int(fields.get(b"content-length", b"0"))
        while len(body) < length:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            body += chunk
        key = fields.get(b"idempotency-key", b"").decode()
        srv = self.server
        with srv.lock:
            what = srv.script.pop(0) if srv.script else "200"
            if what == "500" and srv.fail_500_for and not srv.fail_500_until:
                srv.fail_500_until = time.monotonic() + srv.fail_500_for
            if not srv.script and time.monotonic() < srv.fail_500_until:
                what = "500"  # answers 500 for a while
            srv.seen.append((key, what))
        if what == "hang":
            srv.release.wait(30)
            return
        if what == "reset":
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.request.close()
            return
        status = b"500 Internal Server Error" if what == "500" else b"200 OK"
        self.request.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")


def _fire_alerts(engine: Engine, cfg: Any, n: int) -> set[str]:
    """``n`` new firing alerts (models of their own) through the real lifecycle; the outbox rows enqueued."""
    import uuid

    from alerts.lifecycle import evaluate
    from storage.db import session_factory
    from storage.models import Alert, AlertDelivery
    from tests.alerts.conftest import signal

    tag = uuid.uuid4().hex[:8]
    with session_factory(engine)() as s:
        evaluate(s, cfg, [signal("firing", model=f"fault-{tag}-{i}") for i in range(n)], datetime.now(timezone.utc))
        s.commit()
        return set(s.scalars(select(AlertDelivery.id).join(Alert, Alert.id == AlertDelivery.alert_id)
                             .where(Alert.model.like(f"fault-{tag}-%"))))


def _deliver_until_done(engine: Engine, cfg: Any, rows: set[str], timeout: float) -> tuple[int, int]:
    """Run the delivery job until every one of ``rows`` is sent; returns (rows sent, job runs that failed)."""
    from alerts.outbox import deliver_due
    from storage.db import session_factory
    from storage.models import AlertDelivery

    factory = session_factory(engine)
    failed_runs = 0
    sent = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            deliver_due(factory, cfg)
            with factory() as s:
                sent = int(s.execute(select(func.count()).select_from(AlertDelivery).where(
                    AlertDelivery.status == "sent", AlertDelivery.id.in_(sorted(rows)))).scalar_one())
        except Exception:  # the database went away under the job: the scheduler runs it again
            failed_runs += 1
        if sent >= len(rows):
            break
        time.sleep(0.05)
    return sent, failed_runs


def _delivery_figures(receiver: HostileReceiver, rows: set[str], sent: int, **more: Any) -> dict[str, Any]:
    acked = Counter({k: v for k, v in receiver.acknowledged().items() if k in rows})
    return {"deliveries_expected": len(rows), "deliveries_made": len(acked),
            "deliveries_duplicated": sum(acked.values()) - len(acked), "deliveries_lost": len(rows) - len(acked),
            "receiver_requests": len(receiver.seen), "outbox_rows_sent": sent, **more}


def _swallowed_db_errors() -> int:
    """Remove (and count) the database errors fail-open delivery code reported while we killed connections."""
    from sqlalchemy.exc import DBAPIError

    from storage import failopen

    ours = [e for e in failopen.captured if isinstance(e, DBAPIError)]
    failopen.captured[:] = [e for e in failopen.captured if not isinstance(e, DBAPIError)]
    return len(ours)


def webhook_receiver_hostile(tmp: Path, engine: Engine, alerts: int = 3) -> dict[str, Any]:
    """The receiver hangs, then resets connections, then answers 500 for 1.5 s, then recovers."""
    from tests.alerts.conftest import alerts_config

    receiver = HostileReceiver(["hang"] * alerts + ["reset"] * alerts + ["500"], fail_500_for=1.5)
    try:
        cfg = alerts_config([{"name": "hook", "kind": "webhook", "url": receiver.url, "timeout_seconds": 0.5}])
        rows = _fire_alerts(engine, cfg, alerts)
        sent, failed = _deliver_until_done(engine, cfg, rows, timeout=40)
        kinds = Counter(what for _, what in receiver.seen)
        return _delivery_figures(receiver, rows, sent, answers=dict(kinds), recovered=sent == len(rows) == alerts)
    finally:
        receiver.close()


def pg_killed_while_delivering(tmp: Path, engine: Engine, alerts: int = 3) -> dict[str, Any]:
    """Storage connections are terminated repeatedly while the delivery job sends to a receiver that
    answers 500 for a while (so rows are claimed, retried and finished many times under the kills)."""
    from alerts import outbox
    from tests.alerts.conftest import alerts_config

    receiver = HostileReceiver(["500"], fail_500_for=1.0)
    # a row whose 'sent' could not be written is reclaimed after its lease: request timeout plus
    # this margin (30 s in production; shortened so the scenario sees the reclaim in seconds)
    margin, outbox.LEASE_MARGIN_SECONDS = outbox.LEASE_MARGIN_SECONDS, 1.0
    try:
        cfg = alerts_config([{"name": "hook", "kind": "webhook", "url": receiver.url, "timeout_seconds": 1}])
        rows = _fire_alerts(engine, cfg, alerts)
        with _BackendKiller(engine, times=10, every=0.1) as killer:
            sent, failed = _deliver_until_done(engine, cfg, rows, timeout=40)
        swallowed = _swallowed_db_errors()
        return _delivery_figures(receiver, rows, sent, connections_terminated=killer.terminated,
                                 failed_job_runs=failed + swallowed, recovered=sent == len(rows) == alerts)
    finally:
        outbox.LEASE_MARGIN_SECONDS = margin
        receiver.close()


SCENARIOS = {
    "spool_disk_full": (spool_disk_full, False),  # name -> (function, needs PostgreSQL)
    "shipper_kill9_before_cursor": (shipper_kill9_before_cursor, False),
    "pg_killed_while_shipping": (pg_killed_while_shipping, True),
    "pg_killed_while_scoring": (pg_killed_while_scoring, True),
    "webhook_receiver_hangs_resets_500": (webhook_receiver_hostile, False),
    "pg_killed_while_delivering": (pg_killed_while_delivering, True),
}
