"""Tailer: follows a JSONL request log into the spool, across rotation and truncation.

Each line is one of
- a *sample* (the samples-file format of ``vlmwatch ingest``: ``model``, ``prompt``, ``answer``,
  ``image`` as path / data URL / base64 / http URL, optional ``id``, ``ts``, ``response_id``, ``meta``), or
- an *exchange*: ``{"request": <chat completions body>, "response": <chat completion>, "ts": ...}``.

Position is checkpointed (file identity, offset, generation) *after* the spool accepted the lines,
so a restart resumes exactly there: no line skipped, none spooled twice. Rotation by rename is
followed by inode: the old file is read to its end (found again by inode after a restart, among the
log's siblings, and only if its first bytes are still those read), then the new one from its
start. A file that shrank was truncated (logrotate's ``copytruncate``): read from 0. Only complete
lines are consumed; a line still being written waits for its newline. Lines that cannot be used
are counted by reason and logged with their offset.

Sample ids (what makes shipping idempotent) are unique per line ever written: a line's own ``id``;
else, for a line with a response id, a hash of that id and the line's bytes (the same line read
twice is one sample wherever it sits); else a hash of file identity, *generation* and offset plus
the line's bytes. The generation counts the files and truncations the tailer has followed (it is
kept in the checkpoint), so lines written after a truncation at offsets that earlier lines had
get new ids instead of being dropped by storage as duplicates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from collectors.exchange import answer_from_json, check_image_bytes, load_image_ref, parse_chat_request, with_answer_meta
from collectors.metrics import CollectorMetrics
from collectors.pipeline import Redactor, SampleSink
from collectors.sample import CollectedImage, CollectedSample, DropSample
from collectors.sampling import DEFAULT_ROUTE, SamplingPolicy, hash_fraction

__all__ = ["Tailer", "FileId"]

log = logging.getLogger(__name__)

_HEAD = 256  # bytes hashed to tell a reused inode (or a truncated, regrown file) from the file we were reading


@dataclass(frozen=True)
class FileId:
    dev: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileId:
        return cls(st.st_dev, st.st_ino)


def _head_hash(f: BinaryIO, n: int) -> str:
    """sha256 of the first ``n`` bytes (fewer if the file is shorter: then it cannot match a longer head)."""
    pos = f.tell()
    f.seek(0)
    h = hashlib.sha256(f.read(n)).hexdigest()
    f.seek(pos)
    return h


def _parse_ts(value: Any) -> datetime:
    if value is None:
        return datetime.now(timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    try:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise DropSample("unsupported_content", f"ts {value!r} is not ISO 8601") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


class Tailer:
    def __init__(
        self,
        path: str | Path,
        *,
        checkpoint: str | Path,
        sink: SampleSink,
        policy: SamplingPolicy,
        metrics: CollectorMetrics | None = None,
        max_image_bytes: int = 20_000_000,
        redact: Redactor | None = None,
        poll_interval: float = 0.5,
        batch_lines: int = 500,
        from_end: bool = False,
    ) -> None:
        self.path = Path(path)
        self.checkpoint_path = Path(checkpoint)
        self.sink = sink
        self.policy = policy
        self.metrics = metrics or CollectorMetrics("tailer")
        self.max_image_bytes = max_image_bytes
        self.redact = redact
        self.poll_interval = poll_interval
        self.batch_lines = batch_lines
        self.lines_read = 0
        self.bad_lines = 0
        self._f: BinaryIO | None = None
        self._id: FileId | None = None
        self._offset = 0
        self._generation = 0  # files and truncations followed so far: part of position-based ids
        self._rotated_seen = False
        self._stop = threading.Event()
        self._open_initial(from_end)

    # --- position -------------------------------------------------------------------------------
    def _open(self, path: Path, offset: int) -> bool:
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return False
        if self._f is not None:
            self._f.close()
        self._f, self._id, self._offset = f, FileId.of(os.fstat(f.fileno())), offset
        f.seek(offset)
        self._rotated_seen = False
        return True

    def _find_by_id(self, fid: FileId, head: str | None, head_len: int) -> Path | None:
        for p in self.path.parent.iterdir():
            if not p.name.startswith(self.path.name) or not p.is_file():
                continue
            st = p.stat()
            if FileId.of(st) == fid:
                with open(p, "rb") as f:
                    if head is None or _head_hash(f, head_len) == head:
                        return p
        return None

    def _open_initial(self, from_end: bool) -> None:
        cp = self._load_checkpoint()
        if cp is not None:
            fid, offset, head = FileId(cp["dev"], cp["ino"]), int(cp["offset"]), cp.get("head")
            self._generation = int(cp.get("generation", 0))
            where = self._find_by_id(fid, head, int(cp.get("head_len", _HEAD)))
            if where is not None and where.stat().st_size >= offset:
                self._open(where, offset)
                if where != self.path:
                    log.info("resuming rotated log %s at offset %d before %s", where, offset, self.path)
                return
            log.warning("checkpointed log (inode %d, offset %d) is gone, truncated or rewritten; starting %s from 0",
                        fid.ino, offset, self.path)
            self._generation += 1
            self._open(self.path, 0)
            return
        if self._open(self.path, 0) and from_end and self._f is not None:
            self._f.seek(0, os.SEEK_END)
            self._offset = self._f.tell()

    def _load_checkpoint(self) -> dict[str, Any] | None:
        try:
            d = json.loads(self.checkpoint_path.read_text())
            return d if isinstance(d, dict) and {"dev", "ino", "offset"} <= d.keys() else None
        except FileNotFoundError:
            return None
        except ValueError as e:
            log.error("tailer checkpoint %s is unreadable (%r); starting from the file's start", self.checkpoint_path, e)
            return None

    def _save_checkpoint(self) -> None:
        if self._f is None or self._id is None:
            return
        head_len = min(self._offset, _HEAD)
        d = {"path": str(self.path), "dev": self._id.dev, "ino": self._id.ino, "offset": self._offset,
             "generation": self._generation, "head": _head_hash(self._f, head_len), "head_len": head_len}
        tmp = self.checkpoint_path.with_suffix(".tmp")
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(d, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.checkpoint_path)

    # --- reading --------------------------------------------------------------------------------
    def _read_lines(self, final: bool) -> list[tuple[int, bytes]]:
        """Complete lines from the current offset (``final``: the file is rotated away; take the tail too)."""
        assert self._f is not None
        self._f.seek(self._offset)
        out: list[tuple[int, bytes]] = []
        pos = self._offset
        while len(out) < self.batch_lines:
            line = self._f.readline()
            if not line:
                break
            if not line.endswith(b"\n") and not final:
                break  # still being written
            out.append((pos, line))
            pos += len(line)
        return out

    def _check_rotation(self) -> str | None:
        """``"rotated"``, ``"truncated"`` or None, when the current file is at its end."""
        assert self._f is not None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None  # rotated, new file not created yet: keep the old one
        if FileId.of(st) != self._id:
            return "rotated"
        if st.st_size < self._offset:
            return "truncated"
        return None

    def poll_once(self) -> int:
        """Consume what is available now; returns the number of lines handled."""
        if self._f is None:
            if not self._open(self.path, 0):
                return 0
        lines = self._read_lines(final=False)
        if not lines:
            change = self._check_rotation()
            if change == "truncated":
                log.warning("log %s was truncated; reading it again from the start", self.path)
                self._offset = 0
                self._generation += 1
                self._save_checkpoint()
                return 0
            if change == "rotated":
                if not self._rotated_seen:  # give the writer one poll to finish with the old file
                    self._rotated_seen = True
                    return 0
                lines = self._read_lines(final=True)  # the old file's last (possibly unterminated) line
                if not lines:
                    log.info("log %s was rotated; following the new file", self.path)
                    if self._open(self.path, 0):
                        self._generation += 1
                        self._save_checkpoint()
                    return 0
        if not lines:
            return 0
        self._handle(lines)
        return len(lines)

    def _handle(self, lines: list[tuple[int, bytes]]) -> None:
        payloads = []
        for offset, line in lines:
            self.lines_read += 1
            try:
                sample = self._sample(offset, line)
            except DropSample as d:
                self.metrics.drop(d.reason)
                if d.reason != "sampled_out":
                    self.bad_lines += 1
                    log.warning("%s offset %d: line skipped (%s)", self.path, offset, d)
                continue
            if self.redact is not None:
                try:
                    sample = self.redact(sample)  # type: ignore[assignment]
                except Exception as e:
                    log.warning("%s offset %d: redaction hook raised %r; sample dropped", self.path, offset, e)
                    self.metrics.drop("redaction_failed")
                    continue
                if sample is None:
                    self.metrics.drop("redacted_out")
                    continue
            payloads.append(sample.to_bytes())
        if payloads:
            n = self.sink.append(payloads)  # fsync'd before the checkpoint moves
            self.metrics.spooled.labels(self.metrics.source).inc(n)
        last_off, last_line = lines[-1]
        self._offset = last_off + len(last_line)
        self._save_checkpoint()

    def _sample(self, offset: int, line: bytes) -> CollectedSample:
        text = line.strip()
        if not text:
            raise DropSample("bad_json", "empty line")
        try:
            d = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise DropSample("bad_json", f"not JSON ({e})") from None
        if not isinstance(d, dict):
            raise DropSample("bad_json", "line is not a JSON object")
        fraction = hash_fraction(zlib.crc32(text), len(text))
        own = d.get("id") if isinstance(d.get("id"), str) and d.get("id") else None

        def sample_id(response_id: str | None) -> str:
            return own or self._line_id(offset, text, response_id)

        if "request" in d:
            return self._from_exchange(d, sample_id, fraction)
        model, prompt, answer = d.get("model"), d.get("prompt"), d.get("answer")
        if not (isinstance(model, str) and model and isinstance(prompt, str) and isinstance(answer, str)):
            raise DropSample("unsupported_content", "needs string fields model, prompt and answer")
        route = d.get("route") if isinstance(d.get("route"), str) else DEFAULT_ROUTE
        if not self.policy.keep(fraction, model, route):
            raise DropSample("sampled_out")
        image = self._image(d.get("image"))
        meta = d.get("meta") if isinstance(d.get("meta"), dict) else {}
        rid = d.get("response_id") if isinstance(d.get("response_id"), str) else None
        task = d.get("task") if isinstance(d.get("task"), str) and d.get("task") else None
        return CollectedSample(id=sample_id(rid), source="tailer", ts=_parse_ts(d.get("ts")), model=model, route=route,
                               prompt=prompt, answer=answer, response_id=rid, image=image, meta=meta, task=task)

    def _line_id(self, offset: int, text: bytes, response_id: str | None) -> str:
        """Id of a line that has none of its own (see the module docstring)."""
        digest = hashlib.sha256(text).hexdigest()
        if response_id:
            key = f"rid:{response_id}:{digest}"
        else:
            assert self._id is not None
            key = f"pos:{self._id.dev}:{self._id.ino}:{self._generation}:{offset}:{digest}"
        return "tail-" + hashlib.sha256(key.encode()).hexdigest()[:32]

    def _from_exchange(
        self, d: dict[str, Any], sample_id: Callable[[str | None], str], fraction: float
    ) -> CollectedSample:
        model, prompt, image_ref, meta = parse_chat_request(d.get("request"))
        route = d.get("route") if isinstance(d.get("route"), str) else DEFAULT_ROUTE
        if not self.policy.keep(fraction, model, route):
            raise DropSample("sampled_out")
        ans = answer_from_json(d.get("response"))
        image = load_image_ref(image_ref, self.max_image_bytes)
        task = d.get("task") if isinstance(d.get("task"), str) and d.get("task") else None
        return CollectedSample(id=sample_id(ans.response_id), source="tailer", ts=_parse_ts(d.get("ts")), model=model,
                               route=route, prompt=prompt, answer=ans.text, response_id=ans.response_id, image=image,
                               meta=with_answer_meta(meta, ans), task=task)

    def _image(self, value: Any) -> CollectedImage | None:
        if value is None:
            raise DropSample("no_image", "line has no image")
        from storage.images import ImageError, decode_image_ref

        try:
            ref = decode_image_ref(value, self.path.parent, self.max_image_bytes)
        except ImageError as e:
            reason = "too_large" if "over the limit" in str(e) else "bad_image"
            raise DropSample(reason, str(e)) from None
        if ref.url is not None:
            return CollectedImage(url=ref.url)
        assert ref.data is not None
        return check_image_bytes(ref.data, self.max_image_bytes)

    # --- loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        """Follow the file until :meth:`stop`."""
        while not self._stop.is_set():
            try:
                n = self.poll_once()
            except OSError as e:  # a spool or checkpoint write failed: the lines are retried
                log.error("tailer: %s; retrying", e)
                n = 0
            if n == 0:
                self._stop.wait(self.poll_interval)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
