"""Sample ingest shared by ``POST /v1/samples`` and ``POST /v1/traces``: API bodies -> storage records.

Images come as data URLs, bare base64 or http(s) URLs (kept as references, fetched later by the
daemon); server-side file paths are never read. Records storage refuses come back per index
(:func:`storage.repo_samples.ingest_isolated`), the rest of the batch is stored.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import timezone
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from monitor.api.schemas import RejectedOut, SampleIn, SamplesOut

__all__ = ["ingest_batch"]


def _decode_image(value: str, max_bytes: int) -> tuple[bytes | None, str | None]:
    """Image bytes or URL from an API payload. Server-side file paths are not accepted."""
    from storage.images import ImageError, decode_image_ref

    text = value.strip()
    low = text[:8].lower()
    if low.startswith("data:") or low.startswith("http://") or low.startswith("https://"):
        ref = decode_image_ref(text, None, max_bytes)
        return ref.data, ref.url
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image must be a data URL, base64 or an http(s) URL") from None
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data)} bytes, over storage.max_image_bytes={max_bytes}")
    return data, None


def _to_record(smp: SampleIn, max_bytes: int, source: str) -> Any:
    from storage.records import SampleRecord

    data, url = (None, None) if smp.image is None else _decode_image(smp.image, max_bytes)
    kw: dict[str, Any] = dict(
        id=smp.id, model=smp.model, prompt=smp.prompt, answer=smp.answer, source=source,
        image=data, image_url=url, response_id=smp.response_id, label=smp.label, meta=smp.meta, task=smp.task,
    )
    if smp.ts is not None:
        kw["ts"] = smp.ts if smp.ts.tzinfo is not None else smp.ts.replace(tzinfo=timezone.utc)
    if smp.route:
        kw["route"] = smp.route
    return SampleRecord(**kw)


def ingest_batch(
    sessions: sessionmaker[Session], samples: Sequence[SampleIn], *, max_image_bytes: int, source: str = "api",
    tasks: Any = None,
) -> SamplesOut:
    """Store ``samples`` idempotently (by id), in transactions of its own: a record the database
    refuses comes back by index and the rest of the batch is stored; refusals sorted by index.
    ``tasks``: the ``collectors.tasks`` patterns (:class:`storage.tasks.TaskRules`) for samples without a ``task``."""
    from storage.images import ImageError
    from storage.repo_samples import ingest_isolated

    records: list[Any] = []
    positions: list[int] = []
    rejected: list[RejectedOut] = []
    for i, smp in enumerate(samples):
        try:
            rec = _to_record(smp, max_image_bytes, source)
        except ImageError as e:
            rejected.append(RejectedOut(index=i, id=smp.id, reason=f"samples.{i}.image: {e}"))
            continue
        records.append(rec)
        positions.append(i)
    res = ingest_isolated(sessions, records, max_image_bytes=max_image_bytes, tasks=tasks)
    for r in res.rejected:
        idx = positions[r.index] if 0 <= r.index < len(positions) else r.index
        rejected.append(RejectedOut(index=idx, id=r.key, reason=r.reason))
    rejected.sort(key=lambda r: r.index)
    return SamplesOut(accepted=len(res.inserted), duplicates=res.duplicates, rejected=rejected)
