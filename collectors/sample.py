"""The collected sample: what a collector writes to the spool and the shipper hands to storage.

It is plain data (JSON round-trip), independent of the storage schema, so that the spool format
stays stable while storage evolves; :mod:`collectors.shipper` converts it to
``storage.records.SampleRecord``.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import asdict, dataclass, field
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

    def to_json(self) -> bytes:
        d = asdict(self)
        d["ts"] = self.ts.astimezone(timezone.utc).isoformat()
        if self.image is not None and self.image.data is not None:
            d["image"]["data"] = base64.b64encode(self.image.data).decode("ascii")
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> CollectedSample:
        d = json.loads(raw)
        img = d.pop("image", None)
        image = None
        if img is not None:
            data = img.pop("data", None)
            image = CollectedImage(**img, data=base64.b64decode(data) if data is not None else None)
        ts = datetime.fromisoformat(d.pop("ts"))
        return cls(**d, ts=ts, image=image)
