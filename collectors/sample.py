"""The collected sample: what a collector writes to the spool and the shipper hands to storage.

It is plain data (a JSON header plus raw image bytes), independent of the storage schema, so that the spool format
stays stable while storage evolves; :mod:`collectors.shipper` converts it to
``storage.records.SampleRecord``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["CollectedImage", "CollectedSample", "DropSample", "new_sample_id"]


class DropSample(Exception):
    """Raised while building a sample: the sample is lost, counted under ``reason``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def new_sample_id(source: str) -> str:
    """A fresh id, assigned once before spooling so re-shipping the record is idempotent."""
    return f"{source}-{uuid.uuid4().hex}"


@dataclass
class CollectedImage:
    """The image of a sample: decoded bytes (from a data URL or file) or an http(s) URL to fetch later."""

    sha256: str | None = None
    size: int | None = None
    format: str | None = None  # PIL format name, e.g. "PNG"
    width: int | None = None
    height: int | None = None
    data: bytes | None = field(default=None, repr=False)
    url: str | None = None  # http(s) image, fetched later by the daemon


@dataclass
class CollectedSample:
    id: str
    source: str  # proxy | tailer | sdk
    ts: datetime  # when the request happened (UTC)
    model: str
    route: str
    prompt: str
    answer: str
    response_id: str | None = None
    image: CollectedImage | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    task: str | None = None  # explicit task (a tailed line's `task`); else inferred when stored (storage.tasks)

    def to_bytes(self) -> bytes:
        """Spool payload: one JSON line of metadata, then the raw image bytes (no base64 round trip)."""
        d: dict[str, Any] = {
            "id": self.id, "source": self.source, "ts": self.ts.astimezone(timezone.utc).isoformat(),
            "model": self.model, "route": self.route, "prompt": self.prompt, "answer": self.answer,
            "response_id": self.response_id, "image": None, "meta": self.meta,
        }
        if self.task is not None:  # spool records without it (older collectors) read back as None
            d["task"] = self.task
        data = b""
        img = self.image
        if img is not None:
            d["image"] = {"sha256": img.sha256, "size": img.size, "format": img.format, "width": img.width,
                          "height": img.height, "url": img.url, "data": None}
            if img.data is not None:
                data = img.data
                d["image"]["data"] = len(data)
        # surrogatepass: an unpaired surrogate a client sent (JSON "\ud800") is kept, not a crash;
        # storage replaces it (storage.records) like any other text it cannot hold
        head = json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
        return head + b"\n" + data  # json.dumps escapes newlines, so the first one ends the header

    @classmethod
    def from_bytes(cls, raw: bytes) -> CollectedSample:
        head, _, data = raw.partition(b"\n")
        d = json.loads(head.decode("utf-8", "surrogatepass"))
        img = d.pop("image", None)
        image = None
        if img is not None:
            n = img.pop("data", None)
            if n is not None and n != len(data):
                raise ValueError(f"spool record says {n} image bytes, has {len(data)}")
            image = CollectedImage(**img, data=data if n is not None else None)
        ts = datetime.fromisoformat(d.pop("ts"))
        return cls(**d, ts=ts, image=image)
