"""Plain records that collectors and importers hand to storage.

These are the only storage types a collector needs: standard library, no SQLAlchemy, no Pillow.
Storage validates them at ingest (:func:`storage.repo_samples.ingest_samples`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "DEFAULT_ROUTE",
    "SampleRecord",
    "LabelRecord",
    "Rejected",
]

DEFAULT_ROUTE = "/v1/chat/completions"


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


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record storage refused, with the reason (for the caller's report)."""

    key: str  # sample id, or the label's sample_id / response_id
    reason: str
    index: int = -1  # position in the batch the caller passed
