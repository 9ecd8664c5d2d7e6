"""Dead letters: spool records that storage refused, kept beside their lane with the reason.

A record the shipper cannot store (unreadable, invalid, or refused by the database) must neither
stall its lane nor vanish: it is appended to ``<lane>/dead-letter.jsonl`` (fsync'd before the
lane's cursor moves past it) and the rest of the batch ships. One JSON object a line::

    {"payload_sha256": "...", "ts": "<when, ISO 8601>", "lane": "proxy-8081", "sample_id": "..." | null,
     "reason": "storage refused the record: ...", "payload": "<base64 of the spool record>" | null}

``payload`` is the spool record as written (``collectors.sample.CollectedSample.to_bytes``), so a
record can be replayed once the cause is fixed. A record is written once however often it is
re-shipped (a crash between this write and the cursor update): entries are keyed by the sha256 of
the payload. The file is bounded: past ``max_bytes`` entries keep their reason but not their payload,
and past twice that nothing more is written (logged as an error).

:class:`DeadLetterCollector` counts the entries of every lane under spool roots for Prometheus
(``vlmwatch_spool_dead_letters_total{lane}``), from the files, so the count is the same in every
process that reads the spool (the proxy's ``/metrics``, the daemon's) and survives restarts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily

__all__ = ["DEAD_LETTER_FILE", "DeadLetters", "DeadLetterCollector", "DEFAULT_DEAD_LETTER_BYTES"]

log = logging.getLogger(__name__)

DEAD_LETTER_FILE = "dead-letter.jsonl"
DEFAULT_DEAD_LETTER_BYTES = 256 * 1024 * 1024  # payloads kept up to this; entries alone up to twice it
_KEY = re.compile(rb'^\{"payload_sha256":"([0-9a-f]{64})"')


class DeadLetters:
    """The dead-letter file of one spool lane (used by the lane's one shipper)."""

    def __init__(self, lane_dir: str | Path, max_bytes: int = DEFAULT_DEAD_LETTER_BYTES) -> None:
        self.dir = Path(lane_dir)
        self.path = self.dir / DEAD_LETTER_FILE
        self.max_bytes = max_bytes
        self._keys: set[str] | None = None

    def _known(self) -> set[str]:
        if self._keys is None:
            self._keys = set()
            try:
                with open(self.path, "rb") as f:
                    for line in f:
                        m = _KEY.match(line)
                        if m:
                            self._keys.add(m.group(1).decode())
            except FileNotFoundError:
                pass
        return self._keys

    def add(self, entries: list[tuple[bytes, str | None, str]]) -> int:
        """Append ``(payload, sample_id, reason)`` entries not recorded yet, fsync'd; returns how many."""
        known = self._known()
        lines: list[bytes] = []
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        now = datetime.now(timezone.utc).isoformat()
        added: set[str] = set()
        for payload, sample_id, reason in entries:
            key = hashlib.sha256(payload).hexdigest()
            if key in known or key in added:
                continue
            entry: dict[str, Any] = {"payload_sha256": key, "ts": now, "lane": self.dir.name,
                                     "sample_id": sample_id[:1000] if sample_id is not None else None,
                                     "reason": reason[:2000], "payload": None}
            small = len(json.dumps(entry, separators=(",", ":"))) + 1
            if size + small > 2 * self.max_bytes:
                log.error("dead-letter file %s is full (%d bytes): record %s (%s) is not recorded",
                          self.path, size, sample_id, reason)
                continue
            if size + small + len(payload) * 4 // 3 + 4 <= self.max_bytes:
                entry["payload"] = base64.b64encode(payload).decode()
            line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"  # ASCII: any id or reason fits
            lines.append(line)
            size += len(line)
            added.add(key)
        if not lines:
            return 0
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        start = os.fstat(fd).st_size
        try:
            blob = memoryview(b"".join(lines))
            while blob:
                blob = blob[os.write(fd, blob):]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, start)  # no torn line: the whole batch is retried with the next round
            raise
        finally:
            os.close(fd)
        known |= added  # only once durable: a failed write is retried with the next round
        return len(lines)


class DeadLetterCollector:
    """Prometheus collector: dead-letter entries per lane under the watched spool roots."""

    def __init__(self) -> None:
        self._roots: list[Path] = []
        self._counts: dict[Path, tuple[int, int, int]] = {}  # file -> (inode, bytes counted, lines)
        self._lock = threading.Lock()

    def watch(self, root: str | Path) -> None:
        p = Path(root)
        with self._lock:
            if p not in self._roots:
                self._roots.append(p)

    def _lines(self, path: Path) -> int:
        """Lines of an append-only file, counting only what was added since the last scrape."""
        try:
            st = path.stat()
        except FileNotFoundError:
            self._counts.pop(path, None)
            return 0
        ino, done, n = self._counts.get(path, (st.st_ino, 0, 0))
        if ino != st.st_ino or st.st_size < done:  # replaced or truncated by the operator
            done, n = 0, 0
        if st.st_size > done:
            with open(path, "rb") as f:
                f.seek(done)
                while chunk := f.read(1 << 20):
                    n += chunk.count(b"\n")
                    done += len(chunk)
        self._counts[path] = (st.st_ino, done, n)
        return n

    def counts(self) -> dict[str, int]:
        """Entries per lane (lanes without dead letters are left out)."""
        out: dict[str, int] = {}
        with self._lock:
            for root in self._roots:
                try:
                    lane_dirs = sorted(p for p in root.iterdir() if p.is_dir())
                except FileNotFoundError:
                    continue
                for lane_dir in lane_dirs:
                    n = self._lines(lane_dir / DEAD_LETTER_FILE)
                    if n:
                        out[lane_dir.name] = out.get(lane_dir.name, 0) + n
        return out

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("vlmwatch_spool_dead_letters", _HELP, labels=["lane"])

    def collect(self) -> Iterator[CounterMetricFamily]:
        fam = CounterMetricFamily("vlmwatch_spool_dead_letters", _HELP, labels=["lane"])
        for lane, n in self.counts().items():
            fam.add_metric([lane], n)
        yield fam


_HELP = "Spool records storage refused, kept in the lane's dead-letter file (see its reason)"
