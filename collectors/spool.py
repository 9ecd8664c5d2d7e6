"""Durable local spool: append-only, fsync'd segment files, bounded in bytes.

Layout: ``<root>/<lane>/seg-<n>.log`` plus ``cursor.json`` (how far the shipper got). One
process writes a lane (``writer.lock``) and one ships it (``shipper.lock``), so a proxy and a
tailer each write their own lane and one shipper (in the collector or in the daemon) drains all.

Record framing: ``b"VWS1"``, payload length (u32 LE), CRC-32 of the payload (u32 LE), payload.
A torn write at the tail (``kill -9`` mid-write) fails the length or CRC check; the writer cuts
it off when it reopens the lane, the reader waits at it while the segment is still active.
A record counts as accepted once ``append`` returns: it was written and fsync'd.

When the lane would exceed ``max_bytes`` the oldest segments are deleted and their unshipped
records counted (``spool_full``) — the collector loses old samples, never blocks.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SpoolWriter", "SpoolReader", "SpoolBusy", "Position", "lanes", "DEFAULT_SEGMENT_BYTES"]

log = logging.getLogger(__name__)

MAGIC = b"VWS1"
_HEADER = struct.Struct("<4sII")
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
_SEG_RE = re.compile(r"^seg-(\d{12})\.log$")
_LANE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


class SpoolBusy(RuntimeError):
    """Another process already writes (or ships) this spool lane."""


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


def _seg_name(n: int) -> str:
    return f"seg-{n:012d}.log"


def _segments(lane_dir: Path) -> list[int]:
    out = []
    for name in os.listdir(lane_dir):
        m = _SEG_RE.match(name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(path: Path, what: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolBusy(f"another process is the {what} of spool lane {path.parent}") from None
    return fd


def _scan(path: Path, start: int = 0) -> Iterator[tuple[int, int, bytes]]:
    """Valid records of a segment from ``start``: ``(offset, end, payload)``; stops at the first bad one."""
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        while True:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                return
            magic, length, crc = _HEADER.unpack(head)
            if magic != MAGIC:
                return
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            end = pos + _HEADER.size + length
            yield pos, end, payload
            pos = end


def lanes(root: str | Path) -> list[str]:
    """Lane names present under a spool root."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _LANE_RE.match(p.name))


def read_cursor(lane_dir: Path) -> Position | None:
    try:
        d = json.loads((lane_dir / "cursor.json").read_text())
        return Position(int(d["segment"]), int(d["offset"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        log.error("spool cursor %s is unreadable (%r); shipping restarts from the oldest record", lane_dir, e)
        return None


class SpoolWriter:
    """Appends records to one lane. Not thread-safe: one worker thread owns it."""

    def __init__(
        self,
        root: str | Path,
        lane: str,
        *,
        max_bytes: int,
        segment_bytes: int | None = None,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        if not _LANE_RE.match(lane):
            raise ValueError(f"spool lane name {lane!r} must be 1-100 of [A-Za-z0-9_.-]")
        if max_bytes < 4096:
            raise ValueError(f"spool max_bytes must be at least 4096, got {max_bytes}")
        self.dir = Path(root) / lane
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(DEFAULT_SEGMENT_BYTES, max(4096, max_bytes // 8))
        self._on_drop = on_drop or (lambda n: None)
        self._lock_fd = _lock(self.dir / "writer.lock", "writer")
        self._sizes: dict[int, int] = {}
        segs = _segments(self.dir)
        for n in segs:
            self._sizes[n] = (self.dir / _seg_name(n)).stat().st_size
        self._active = segs[-1] if segs else 1
        self._recover_tail()
        self._fd = os.open(self.dir / _seg_name(self._active), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._sizes[self._active] = os.fstat(self._fd).st_size
        _fsync_dir(self.dir)

    def _recover_tail(self) -> None:
        path = self.dir / _seg_name(self._active)
        if not path.exists():
            return
        good = 0
        for _, end, _ in _scan(path):
            good = end
        size = path.stat().st_size
        if good < size:
            log.warning("spool %s: cutting a torn tail of %d bytes left by a crash", path, size - good)
            with open(path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
            self._sizes[self._active] = good

    @property
    def total_bytes(self) -> int:
        return sum(self._sizes.values())

    def _roll(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._active += 1
        self._fd = os.open(self.dir / _seg_name(self._active), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._sizes[self._active] = 0
        _fsync_dir(self.dir)

    def _unshipped_records(self, n: int) -> int:
        cursor = read_cursor(self.dir)
        if cursor is not None and n < cursor.segment:
            return 0
        start = cursor.offset if cursor is not None and cursor.segment == n else 0
        return sum(1 for _ in _scan(self.dir / _seg_name(n), start))

    def _make_room(self, need: int) -> None:
        while self.total_bytes + need > self.max_bytes:
            oldest = min(self._sizes)
            if oldest == self._active:
                if self._sizes[oldest] == 0:
                    return
                self._roll()
                continue
            lost = self._unshipped_records(oldest)
            try:
                os.unlink(self.dir / _seg_name(oldest))
            except FileNotFoundError:
                pass
            del self._sizes[oldest]
            if lost:
                log.warning("spool %s full: dropped oldest segment %d with %d unshipped records", self.dir, oldest, lost)
                self._on_drop(lost)

    def append(self, payloads: list[bytes]) -> int:
        """Write and fsync ``payloads``; returns how many were accepted (too-large ones are dropped)."""
        recs = []
        for p in payloads:
            rec = _HEADER.pack(MAGIC, len(p), zlib.crc32(p)) + p
            if len(rec) > self.max_bytes // 2:
                log.warning("spool %s: a record of %d bytes exceeds half the spool; dropped", self.dir, len(rec))
                self._on_drop(1)
                continue
            recs.append(rec)
        if not recs:
            return 0
        blob = b"".join(recs)
        # keep segments near segment_bytes so whole segments can be dropped and deleted
        if self._sizes[self._active] and self._sizes[self._active] + len(blob) > self.segment_bytes:
            self._roll()
        self._make_room(len(blob))
        view = memoryview(blob)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)
        except OSError:
            # disk full (ENOSPC, EFBIG) after a partial write: cut the torn record, or the reader
            # would stop at it and every record appended after it would never ship
            os.ftruncate(self._fd, self._sizes[self._active])
            raise
        self._sizes[self._active] += len(blob)
        return len(recs)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


class SpoolReader:
    """Reads a lane from its cursor; :meth:`commit` moves the cursor durably and deletes shipped segments."""

    def __init__(self, root: str | Path, lane: str) -> None:
        self.dir = Path(root) / lane
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.dir / "shipper.lock", "shipper")

    def position(self) -> Position:
        cursor = read_cursor(self.dir)
        if cursor is not None:
            return cursor
        segs = _segments(self.dir)
        return Position(segs[0] if segs else 1, 0)

    def read(self, max_records: int = 500, max_bytes: int = 64 * 1024 * 1024) -> tuple[list[bytes], Position]:
        """Up to ``max_records`` payloads after the cursor, and the position just after them."""
        pos = self.position()
        out: list[bytes] = []
        size = 0
        segs = [n for n in _segments(self.dir) if n >= pos.segment]
        if segs and segs[0] > pos.segment:  # the cursor's segment was dropped for space
            pos = Position(segs[0], 0)
        for i, n in enumerate(segs):
            if n > pos.segment:
                pos = Position(n, 0)
            last = i == len(segs) - 1
            end = pos.offset
            try:
                for _, end, payload in _scan(self.dir / _seg_name(n), pos.offset):
                    out.append(payload)
                    size += len(payload)
                    pos = Position(n, end)
                    if len(out) >= max_records or size >= max_bytes:
                        return out, pos
            except FileNotFoundError:  # dropped for space while we read
                continue
            if last:
                break
            seg_size = (self.dir / _seg_name(n)).stat().st_size
            if end < seg_size:
                log.error("spool %s: segment %d has %d unreadable bytes after offset %d; skipped",
                          self.dir, n, seg_size - end, end)
        return out, pos

    def backlog_bytes(self) -> int:
        pos = self.position()
        total = 0
        for n in _segments(self.dir):
            if n >= pos.segment:
                try:
                    total += (self.dir / _seg_name(n)).stat().st_size
                except FileNotFoundError:
                    continue
        return max(0, total - (pos.offset if pos.segment in _segments(self.dir) else 0))

    def commit(self, pos: Position) -> None:
        tmp = self.dir / "cursor.json.tmp"
        with open(tmp, "w") as f:
            json.dump({"segment": pos.segment, "offset": pos.offset}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / "cursor.json")
        _fsync_dir(self.dir)
        for n in _segments(self.dir):
            if n < pos.segment:
                try:
                    os.unlink(self.dir / _seg_name(n))
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
