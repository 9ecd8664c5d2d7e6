"""Plain records that collectors and importers hand to storage.

These are the only storage types a collector needs: standard library, no SQLAlchemy, no Pillow.
Storage validates them at ingest (:func:`storage.repo_samples.ingest_samples`).

Text is made storable here, once, the same way for SQLite and PostgreSQL: every U+0000 (NUL,
which PostgreSQL text and JSONB refuse) and every unpaired surrogate (which is not UTF-8) in a
string field or anywhere in ``meta`` (keys and values) becomes U+FFFD, the replacement character;
numbers JSON cannot hold (NaN, ±Infinity) in ``meta`` become null. So one client's odd byte
neither stalls shipping nor gets stored differently on the two backends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "DEFAULT_ROUTE",
    "SampleRecord",
    "LabelRecord",
    "Rejected",
    "storable_text",
    "storable_json",
]

DEFAULT_ROUTE = "/v1/chat/completions"
REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> str:
    """``value`` with NUL and unpaired surrogates replaced by U+FFFD (the same object if clean)."""
    if value.isascii():
        return value.replace("\x00", REPLACEMENT) if "\x00" in value else value
    return _UNSTORABLE.sub(REPLACEMENT, value)


def storable_json(value: Any) -> Any:
    """A JSON value with :func:`storable_text` applied to every string and non-finite floats as None."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float):
        return value if value - value == 0.0 else None  # NaN and ±inf fail x - x == 0
    if isinstance(value, dict):
        return {storable_text(k) if isinstance(k, str) else k: storable_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable_json(v) for v in value]
    return value


def _make_storable(record: Any) -> None:
    for f in fields(record):
        v = getattr(record, f.name)
        if isinstance(v, str):
            clean: Any = storable_text(v)
        elif f.name == "meta" and isinstance(v, dict):
            clean = storable_json(v)
        else:
            continue
        if clean is not v:
            object.__setattr__(record, f.name, clean)  # frozen: set once, before anyone sees it


@dataclass(frozen=True, slots=True)
class SampleRecord:
    """One sampled exchange: image + prompt + served answer.

    ``id`` is chosen by the collector and makes ingest idempotent (sent twice, stored once).
    Give the image as raw ``image`` bytes, or as ``image_url`` (http/https, not fetched at ingest).
    ``label`` (answer correct?) becomes a label row with the ingest's label source.
    """

    id: str
    model: str
    prompt: str
    answer: str
    ts: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    route: str = DEFAULT_ROUTE
    source: str = "ingest"  # proxy | tailer | sdk | ingest | api
    image: bytes | None = None
    image_url: str | None = None
    response_id: str | None = None
    label: bool | None = None
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _make_storable(self)


@dataclass(frozen=True, slots=True)
class LabelRecord:
    """Correctness evidence for one sample, by ``sample_id`` or by ``response_id``.

    A label by ``response_id`` whose sample has not arrived yet is kept and joined when it does.
    """

    correct: bool
    source: str = "human"  # human | ground_truth | self_consistency
    sample_id: str | None = None
    response_id: str | None = None
    value: float | None = None  # e.g. self-consistency agreement

    def __post_init__(self) -> None:
        _make_storable(self)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record storage refused, with the reason (for the caller's report)."""

    key: str  # sample id, or the label's sample_id / response_id
    reason: str
    index: int = -1  # position in the batch the caller passed
