"""Shipper: drains spool lanes into storage, idempotently, resuming after restarts.

Each round reads a batch from a lane's cursor, stores it with
:func:`storage.repo_samples.ingest_isolated` (``INSERT ... ON CONFLICT DO NOTHING`` on the
collector-chosen sample id, one transaction unless the database refuses a record), and only then
moves the cursor. A crash between the two re-ships the batch next time; the ids make that a
no-op, so nothing is lost or doubled. When storage is down the round fails, the spool keeps
growing (bounded), and the shipper retries with exponential backoff and jitter.

A record that can never be stored (unreadable, invalid, or refused by the database) goes to the
lane's dead-letter file with its reason (:mod:`collectors.dead_letter`) before the cursor moves:
the rest of its batch and every other lane ship, and ``vlmwatch_spool_dead_letters_total`` counts it.

The daemon runs it with ``Shipper(spool_dir, storage_url).start()`` (a thread) or calls
``ship_once()`` from a scheduled job. ``password_env`` names the environment variable with the
database password (``storage.password_env``); the secret itself never passes through here.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

from collectors.dead_letter import DeadLetters
from collectors.metrics import CollectorMetrics
from collectors.sample import CollectedSample
from collectors.spool import SpoolBusy, SpoolReader, lanes

__all__ = ["Shipper", "to_record"]

log = logging.getLogger(__name__)


def to_record(sample: CollectedSample) -> Any:
    """The storage record for a collected sample."""
    from storage.records import SampleRecord

    img = sample.image
    return SampleRecord(
        id=sample.id,
        model=sample.model,
        prompt=sample.prompt,
        answer=sample.answer,
        ts=sample.ts,
        route=sample.route,
        source=sample.source,
        image=img.data if img is not None else None,
        image_url=img.url if img is not None and img.data is None else None,
        response_id=sample.response_id,
        meta=sample.meta or None,
        task=sample.task,
    )


class Shipper:
    def __init__(
        self,
        spool_dir: str | Path,
        storage_url: str,
        *,
        password_env: str | None = "VLMWATCH_DB_PASSWORD",  # storage.password_env's default
        batch: int = 500,
        interval: float = 2.0,
        max_backoff: float = 60.0,
        max_image_bytes: int = 20_000_000,
        metrics: CollectorMetrics | None = None,
        engine: Any = None,
        stop: threading.Event | None = None,  # set to end run() (after one last round)
        tasks: Any = None,  # collectors.tasks patterns (storage.tasks.TaskRules): a sample's task when it has none
    ) -> None:
        self.tasks = tasks
        self.spool_dir = Path(spool_dir)
        self.storage_url = storage_url
        self.password_env = password_env  # env var with the DB password (storage.password_env)
        self.batch = batch
        self.interval = interval
        self.max_backoff = max_backoff
        self.max_image_bytes = max_image_bytes
        self.metrics = metrics or CollectorMetrics("shipper")
        self.metrics.watch_spool(self.spool_dir)
        self._engine = engine
        self._own_engine = engine is None
        self._factory: Any = None
        self._readers: dict[str, SpoolReader] = {}
        self._dead: dict[str, DeadLetters] = {}
        self._stop = stop if stop is not None else threading.Event()
        self._thread: threading.Thread | None = None
        self.shipped = 0
        self.dead_lettered = 0  # records this shipper moved to a dead-letter file

    def _sessions(self) -> Any:
        if self._factory is None:
            from storage.db import make_engine, session_factory

            if self._engine is None:
                self._engine = make_engine(self.storage_url, self.password_env)
            self._factory = session_factory(self._engine)
        return self._factory

    def _reader(self, lane: str) -> SpoolReader | None:
        r = self._readers.get(lane)
        if r is None:
            try:
                r = self._readers[lane] = SpoolReader(self.spool_dir, lane)
            except SpoolBusy:
                log.debug("spool lane %s is shipped by another process", lane)
                return None
        return r

    def _ship_lane(self, reader: SpoolReader) -> int:
        from storage.repo_samples import ingest_isolated

        done = 0
        while True:
            payloads, pos = reader.read(max_records=self.batch)
            if not payloads:
                if pos != reader.position():  # moved past an empty or dropped segment
                    reader.commit(pos)
                return done
            records, kept, dead = [], [], []
            for p in payloads:
                try:
                    records.append(to_record(CollectedSample.from_bytes(p)))
                except (ValueError, KeyError, TypeError) as e:
                    dead.append((p, None, f"unreadable spool record: {e!r}"))
                else:
                    kept.append(p)
            result = ingest_isolated(self._sessions(), records, max_image_bytes=self.max_image_bytes, tasks=self.tasks)
            dead += [(kept[rej.index], rej.key, rej.reason) for rej in result.rejected]
            if dead:
                self._dead_letter(reader, dead)
            reader.commit(pos)
            n = len(result.inserted)
            self.shipped += n
            self.metrics.shipped.inc(n)
            done += len(payloads)
            if len(payloads) < self.batch:
                return done

    def _dead_letter(self, reader: SpoolReader, dead: list[tuple[bytes, str | None, str]]) -> None:
        lane = reader.dir.name
        letters = self._dead.get(lane)
        if letters is None:
            letters = self._dead[lane] = DeadLetters(reader.dir)
        n = letters.add(dead)  # fsync'd before the cursor moves past them
        self.dead_lettered += n
        for _, sid, reason in dead:
            log.error("spool lane %s: sample %s moved to %s: %s", lane, sid, letters.path, reason)

    def ship_once(self) -> int:
        """Drain every lane once; returns the number of spool records handled. Raises if storage fails."""
        total = 0
        backlog = 0
        for lane in lanes(self.spool_dir):
            reader = self._reader(lane)
            if reader is None:
                continue
            total += self._ship_lane(reader)
            backlog += reader.backlog_bytes()
        self.metrics.ship_backlog.set(backlog)
        return total

    def run(self) -> None:
        """Ship every ``interval`` seconds until :meth:`stop`; back off on storage errors."""
        delay = self.interval
        failures = 0
        while not self._stop.is_set():
            try:
                self.ship_once()
            except Exception as e:  # storage down, not migrated, disk trouble: retry later
                failures += 1
                self.metrics.ship_errors.inc()
                delay = min(self.max_backoff, self.interval * 2 ** min(failures, 10)) * random.uniform(0.5, 1.0)
                log.warning("shipping to storage failed (%s); retrying in %.1f s", e, delay)
            else:
                if failures:
                    log.info("shipping to storage recovered after %d failed rounds", failures)
                failures = 0
                delay = self.interval
            self._stop.wait(delay)
        try:
            self.ship_once()  # one last round at shutdown
        except Exception as e:
            log.warning("final shipping round failed (%s); the spool keeps the samples", e)

    def start(self) -> Shipper:
        self._thread = threading.Thread(target=self.run, name="vlmwatch-shipper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for r in self._readers.values():
            r.close()
        self._readers.clear()
        if self._engine is not None and self._own_engine:
            self._engine.dispose()
            self._engine, self._factory = None, None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Tests: ship until nothing is left or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ship_once() == 0:
                return True
        return False
