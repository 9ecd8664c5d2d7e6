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
from dataclasses import dataclass, field
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
    return _UNSTORABLE.sub(REPLACEMENT, value) if _UNSTORABLE.search(value) else value


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


def _maybe_unstorable(value: Any) -> bool:
    """Cheap screen: False when ``value`` surely needs no change (ASCII text without NUL, finite numbers)."""
    t = type(value)
    if t is str:
        return "\x00" in value or not value.isascii()
    if t is float:
        return value - value != 0.0
    if t is dict:
        for k, v in value.items():
            if _maybe_unstorable(k) or _maybe_unstorable(v):
                return True
        return False
    if t is list or t is tuple:
        for v in value:
            if _maybe_unstorable(v):
                return True
    return False


def _make_storable(record: Any, text_fields: tuple[str, ...]) -> None:
    for name in text_fields:
        v = getattr(record, name)
        if type(v) is str and ("\x00" in v or not v.isascii()) and (clean := storable_text(v)) is not v:
            object.__setattr__(record, name, clean)  # frozen: set once, before anyone sees it
    meta = getattr(record, "meta", None)
    if isinstance(meta, dict) and _maybe_unstorable(meta):
        object.__setattr__(record, "meta", storable_json(meta))


@dataclass(frozen=True, slots=True)
class SampleRecord:
    """One sampled exchange: image + prompt + served answer.

    ``id`` is chosen by the collector and makes ingest idempotent (sent twice, stored once).
    Give the image as raw ``image`` bytes, or as ``image_url`` (http/https, not fetched at ingest).
    ``label`` (answer correct?) becomes a label row with the ingest's label source.
    ``task``: the sample's task when the sender knows it (it wins over the configured patterns).
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
    task: str | None = None  # explicit task; None: inferred at ingest by the task patterns (storage.tasks)

    def __post_init__(self) -> None:
        _make_storable(self, _SAMPLE_TEXT)


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
        _make_storable(self, _LABEL_TEXT)


_SAMPLE_TEXT = ("id", "model", "prompt", "answer", "route", "source", "image_url", "response_id")
_LABEL_TEXT = ("source", "sample_id", "response_id")


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record storage refused, with the reason (for the caller's report)."""

    key: str  # sample id, or the label's sample_id / response_id
    reason: str
    index: int = -1  # position in the batch the caller passed
