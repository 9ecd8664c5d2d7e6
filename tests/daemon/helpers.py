"""Shared helpers for daemon/API tests: fresh migrated databases, sample data, a test daemon."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image as PILImage

PG_ADMIN_URL = os.environ.get("VLMWATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png(seed: int, size: int = 16) -> bytes:
    img = PILImage.new("RGB", (size, size), ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def sqlite_db(tmp_path: Path) -> str:
    from storage.db import upgrade

    url = f"sqlite:///{tmp_path / 'vlmwatch.db'}"
    upgrade(url)
    return url


@contextmanager
def postgres_db() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    from storage.db import upgrade

    admin = make_url(PG_ADMIN_URL)
    name = f"vlmwatch_t_{uuid.uuid4().hex[:10]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_probe_version(url: str, model: str = "m") -> int:
    from storage.db import make_engine, session_factory
    from storage.models import ProbeVersion, utcnow

    eng = make_engine(url)
    with session_factory(eng)() as s:
        pv = ProbeVersion(model=model, version="test-1", path="-", model_fingerprint="0" * 64, layer=1,
                          pooling="last", threshold=0.5, active=True, activated_at=utcnow())
        s.add(pv)
        s.commit()
        pid = int(pv.id)
    eng.dispose()
    return pid


def ingest(url: str, n: int, model: str = "m", start: int = 0, images: bool = True) -> list[str]:
    from datetime import datetime, timedelta, timezone

    from storage.db import make_engine, session_factory
    from storage.records import SampleRecord
    from storage.repo_samples import ingest_samples

    t0 = datetime.now(timezone.utc) - timedelta(hours=1)
    recs = [
        SampleRecord(id=f"s{i:05d}", model=model, prompt=f"Is there a cat {i}?", answer="yes" if i % 2 else "no",
                     ts=t0 + timedelta(seconds=i), image=png(i) if images else None, response_id=f"chatcmpl-{i:05d}")
        for i in range(start, start + n)
    ]
    eng = make_engine(url)
    with session_factory(eng).begin() as s:
        res = ingest_samples(s, recs)
    eng.dispose()
    return list(res.inserted)


def hash_score(sample_id: str) -> float:
    return int(hashlib.sha256(sample_id.encode()).hexdigest()[:6], 16) / 0xFFFFFF


def start_test_daemon(url: str, workdir: Path, worker: str, *, delay: float = 0.0, lease: float = 300.0,
                      api_port: int | None = None, extra: list[str] | None = None) -> subprocess.Popen[Any]:
    """Run tests/daemon/daemon_proc.py (a real Daemon with a deterministic hash scorer) as a subprocess."""
    cmd = [PY, str(ROOT / "tests" / "daemon" / "daemon_proc.py"), url, str(workdir), worker,
           "--delay", str(delay), "--lease", str(lease)]
    if api_port:
        cmd += ["--api-port", str(api_port)]
    cmd += extra or []
    log = open(workdir / f"{worker}.log", "ab")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)


@contextmanager
def running_daemons(url: str, workdir: Path, workers: Iterable[str], **options: Any) -> Iterator[dict[str, subprocess.Popen[Any]]]:
    """One :func:`start_test_daemon` per worker (``options``: its keywords), by worker; at the end
    SIGTERM to each still running, and kill -9 to any not stopped within 30 s."""
    procs = {w: start_test_daemon(url, workdir, w, **options) for w in workers}
    try:
        yield procs
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except Exception:
                p.kill()


def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def count(url: str, sql: str) -> int:
    from sqlalchemy import text

    from storage.db import make_engine

    eng = make_engine(url)
    try:
        with eng.connect() as c:
            return int(c.execute(text(sql)).scalar() or 0)
    finally:
        eng.dispose()


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    from storage.db import make_engine

    eng = make_engine(url)
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.execute(text(sql))]
    finally:
        eng.dispose()
