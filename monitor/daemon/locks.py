"""Process-level locks of the daemon.

* SQLite: one daemon per database. An exclusive ``flock`` on ``<db>.daemon.lock`` (released by
  the kernel when the process dies, even on ``kill -9``) makes a second daemon refuse to start.
* PostgreSQL: any number of daemons share the scoring work; one of them is the *scheduler leader*
  (calibrate, detect, deliver, report, retention) through a session-level advisory lock held on a
  dedicated connection. When the leader dies its connection closes, the lock is released, and
  another daemon takes over at its next :meth:`LeaderLock.try_acquire`.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url

__all__ = [
    "DaemonAlreadyRunning",
    "SqliteDaemonLock",
    "LeaderLock",
    "LEADER_LOCK_KEY",
    "sqlite_lock_path",
]

logger = logging.getLogger(__name__)

# A fixed 63-bit key derived from a name, so other applications on the same database don't collide.
LEADER_LOCK_KEY = int.from_bytes(hashlib.sha256(b"vlmwatch:scheduler-leader").digest()[:8], "big") >> 1


class DaemonAlreadyRunning(RuntimeError):
    """A second daemon on a SQLite database: the message says which lock file and which pid."""


def sqlite_lock_path(url: str) -> Path | None:
    """The lock file for a SQLite URL (``None`` for in-memory databases)."""
    u = make_url(url)
    db = u.database
    if not db or db == ":memory:" or db.startswith("file::memory:"):
        return None
    return Path(db).resolve().with_name(Path(db).name + ".daemon.lock")


class SqliteDaemonLock:
    """Exclusive lock file next to a SQLite database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_lock_path(url)
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise DaemonAlreadyRunning(
                f"another vlmwatch daemon (pid {holder}) is already running on the SQLite database "
                f"{make_url(self.url).database} (lock file {self.path}). SQLite supports one daemon; "
                "stop the other one, or use PostgreSQL (storage.url) to run several daemons side by side."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        logger.debug("holding daemon lock %s", self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


class LeaderLock:
    """Scheduler leadership. PostgreSQL: an advisory lock; other databases: always the leader."""

    def __init__(self, engine: Engine, key: int = LEADER_LOCK_KEY) -> None:
        self.engine = engine
        self.key = key
        self.is_postgres = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self.is_leader = not self.is_postgres

    def try_acquire(self) -> bool:
        """Take leadership if free; check a held one is still alive. Returns :attr:`is_leader`."""
        if not self.is_postgres:
            return True
        try:
            if self._conn is not None:
                self._conn.execute(text("SELECT 1"))  # the lock lives as long as this connection
                return True
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
            if got:
                self._conn = conn
                self.is_leader = True
                logger.info("this daemon is now the scheduler leader")
            else:
                conn.close()
        except Exception as e:  # connection lost: leadership lost with it
            if self.is_leader:
                logger.warning("lost scheduler leadership: %s", e)
            self._drop()
        return self.is_leader

    def _drop(self) -> None:
        self.is_leader = False
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:  # already broken
                pass
            self._conn = None

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.close()
            except Exception as e:
                logger.debug("advisory unlock failed (connection gone): %s", e)
            self._conn = None
        self.is_leader = not self.is_postgres
