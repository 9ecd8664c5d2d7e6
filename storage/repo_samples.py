"""Idempotent, batched ingest of samples and their images.

A sample id sent twice is stored once (``INSERT ... ON CONFLICT DO NOTHING``); images are
content-addressed by sha256 and stored once however many samples share them. Records that fail
validation are returned as :class:`~storage.records.Rejected` and the rest of the batch is stored.
The caller owns the transaction: ``with factory.begin() as s: ingest_samples(s, records)``.

:func:`ingest_isolated` runs its own transactions and also isolates what the *database* refuses
(a data or integrity error on a record that passed validation: a constraint or trigger of the
operator's, a value the backend cannot hold): the batch is split until the refused records are
alone, those come back in ``rejected`` (reason ``storage refused the record: ...``), the rest is
stored. Errors that are not about a record (connection lost, schema missing) propagate.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from storage._sql import chunks, in_values, insert_ignore
from storage.images import ImageError, inspect_image, url_key
from storage.models import LABEL_SOURCES, Image, Label, Sample, utcnow
from storage.records import Rejected, SampleRecord
from storage.repo_labels import join_waiting_labels
from storage.tasks import TaskRules, check_task_name

__all__ = ["IngestResult", "ingest_samples", "ingest_isolated", "refused_by_storage", "DEFAULT_LABEL_SOURCE"]

log = logging.getLogger(__name__)

DEFAULT_LABEL_SOURCE = "ground_truth"  # a samples file's `label` is known truth (e.g. SynPOPE)
_SAMPLES = Sample.__table__
_IMAGES = Image.__table__
_LABELS = Label.__table__
_LIMITS = {"id": 128, "model": 256, "route": 256, "source": 32, "response_id": 128}


@dataclass
class IngestResult:
    """What one call stored: new sample ids, how many were already there, and what was refused."""

    inserted: list[str] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    images_inserted: int = 0
    labels_inserted: int = 0


def _check(rec: SampleRecord) -> str | None:
    """Reason the record cannot be stored, or None."""
    for name in ("id", "model"):
        if not isinstance(getattr(rec, name), str) or not getattr(rec, name):
            return f"field '{name}' must be a non-empty string"
    for name in ("prompt", "answer"):
        if not isinstance(getattr(rec, name), str):
            return f"field '{name}' must be a string"
    for name, limit in _LIMITS.items():
        v = getattr(rec, name)
        if v is not None and (not isinstance(v, str) or len(v) > limit):
            return f"field '{name}' must be a string of at most {limit} characters"
    if not isinstance(rec.ts, datetime):
        return "field 'ts' must be a datetime"
    if rec.ts.tzinfo is not None:
        try:
            rec.ts.astimezone(timezone.utc)
        except OverflowError:  # stored, the row could not be read back
            return "field 'ts' is out of range: in UTC it falls outside years 1 to 9999"
    if rec.label is not None and not isinstance(rec.label, bool):
        return "field 'label' must be true or false"
    if rec.task is not None:
        try:
            check_task_name(rec.task, "field 'task'")
        except ValueError as e:
            return str(e)
    if rec.image is not None and rec.image_url is not None:
        return "give either image bytes or image_url, not both"
    if rec.meta is not None:
        if not isinstance(rec.meta, dict):
            return "field 'meta' must be an object"
        try:
            json.dumps(rec.meta, allow_nan=False)
        except (TypeError, ValueError) as e:
            return f"field 'meta' is not JSON-serialisable: {e}"
    return None


def _image_rows(session: Session, images: dict[str, dict[str, Any]]) -> tuple[int, set[str]]:
    """Insert the images not stored yet. Returns (how many were new, keys of those already stored)."""
    if not images:
        return 0, set()
    keys = list(images)
    dialect = session.get_bind().dialect.name
    stored: set[str] = set()
    for part in chunks(keys):
        stored.update(session.execute(select(Image.sha256).where(in_values(Image.sha256, part, dialect))).scalars())
    rows = [images[k] for k in keys if k not in stored]
    if not rows:
        return 0, stored
    res = session.execute(insert_ignore(_IMAGES, dialect).returning(_IMAGES.c.sha256), rows)
    return len(res.all()), stored


def _refill_images(session: Session, images: dict[str, dict[str, Any]], keys: set[str], now: datetime) -> None:
    """Give back bytes to stored images that lost them, for the samples just inserted.

    Runs *after* the samples are inserted, as one conditional UPDATE per image: retention may
    have purged an image between our read and our insert (it re-checks which images pending
    samples need in its own UPDATE, but cannot see a sample not yet committed). Whatever it did,
    an image a new sample needs ends this transaction with its bytes.
    """
    refill = [{"b_sha": k, "b_data": images[k]["data"], "b_now": now} for k in sorted(keys)
              if images[k]["data"] is not None]
    if not refill:
        return
    stmt = (
        update(_IMAGES).where(_IMAGES.c.sha256 == bindparam("b_sha"), _IMAGES.c.data.is_(None))
        # created_at restarts so the image TTL counts from the refill, not the first sighting
        .values(data=bindparam("b_data"), purged_at=None, created_at=bindparam("b_now"))
    )
    session.connection().execute(stmt, refill)


def ingest_samples(
    session: Session,
    records: Sequence[SampleRecord],
    *,
    max_image_bytes: int = 20_000_000,
    label_source: str = DEFAULT_LABEL_SOURCE,
    tasks: TaskRules | None = None,
) -> IngestResult:
    """Store ``records`` idempotently in the caller's transaction. Never raises for a bad record.

    Each sample's task is its record's ``task``, else the first of ``tasks`` (``collectors.tasks``)
    matching its prompt / route, else None."""
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source must be one of {', '.join(LABEL_SOURCES)}, not {label_source!r}")
    result = IngestResult()
    now = utcnow()
    images: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    labels: dict[str, bool] = {}
    seen: set[str] = set()
    for i, rec in enumerate(records):
        reason = _check(rec)
        image_key: str | None = None
        if reason is None and rec.image is not None:
            digest = hashlib.sha256(rec.image).hexdigest()
            if digest in images and len(rec.image) <= max_image_bytes:
                image_key = digest  # same bytes already validated in this batch
            else:
                try:
                    info = inspect_image(rec.image, max_image_bytes)
                except ImageError as e:
                    reason = str(e)
                else:
                    image_key = info.sha256
                    images[image_key] = {
                        "sha256": info.sha256, "size": info.size, "format": info.format, "width": info.width,
                        "height": info.height, "url": None, "data": rec.image, "created_at": now, "purged_at": None,
                    }
        elif reason is None and rec.image_url is not None:
            image_key = url_key(rec.image_url)
            images.setdefault(image_key, {
                "sha256": image_key, "size": 0, "format": None, "width": None, "height": None,
                "url": rec.image_url, "data": None, "created_at": now, "purged_at": None,
            })
        if reason is not None:
            result.rejected.append(Rejected(key=str(rec.id), reason=reason, index=i))
            continue
        if rec.id in seen:
            result.duplicates += 1
            continue
        seen.add(rec.id)
        ts = rec.ts if rec.ts.tzinfo is not None else rec.ts.replace(tzinfo=timezone.utc)
        rows.append({
            "id": rec.id, "response_id": rec.response_id, "model": rec.model, "route": rec.route,
            "source": rec.source, "ts": ts, "received_at": now, "prompt": rec.prompt, "answer": rec.answer,
            "image_sha256": image_key, "status": "pending", "attempts": 0, "error": None, "lease_owner": None,
            "lease_expires_at": None, "spotcheck_status": "pending", "meta": rec.meta,
            "task": rec.task if tasks is None else tasks.task_of(rec.prompt, rec.route, rec.task),
        })
        if rec.label is not None:
            labels[rec.id] = rec.label
    if not rows:
        return result
    result.images_inserted, stored_images = _image_rows(session, images)
    dialect = session.get_bind().dialect.name
    # Known ids are skipped before the INSERT, which then runs as a plain executemany: far faster
    # on psycopg than INSERT .. RETURNING (one huge statement to parse per batch). ON CONFLICT
    # still guards against a concurrent writer storing the same id in between.
    existing: set[str] = set()
    for part in chunks([r["id"] for r in rows]):
        existing.update(session.execute(select(Sample.id).where(in_values(Sample.id, part, dialect))).scalars())
    rows = [r for r in rows if r["id"] not in existing]
    result.duplicates += len(existing)
    result.inserted = [r["id"] for r in rows]
    if rows:
        res = session.execute(insert_ignore(_SAMPLES, dialect), rows)
        if res.rowcount is None or res.rowcount < len(rows):
            # Another writer stored some of these ids since the SELECT (or the driver cannot say:
            # psycopg's executemany reports -1). Ours are the rows carrying our received_at.
            ours = []
            for part in chunks(result.inserted):
                ours += session.execute(
                    select(Sample.id).where(in_values(Sample.id, part, dialect), Sample.received_at == now)
                ).scalars()
            result.duplicates += len(rows) - len(ours)
            result.inserted = ours
    new = set(result.inserted)
    _refill_images(session, images, {r["image_sha256"] for r in rows if r["id"] in new} & stored_images, now)
    response_ids = [r["response_id"] for r in rows if r["id"] in new and r["response_id"]]
    join_waiting_labels(session, response_ids)
    label_rows = [
        {"sample_id": r["id"], "response_id": r["response_id"], "correct": labels[r["id"]], "source": label_source,
         "value": None, "created_at": now}
        for r in rows if r["id"] in new and r["id"] in labels
    ]
    if label_rows:
        res = session.execute(insert_ignore(_LABELS, dialect).returning(_LABELS.c.id), label_rows)
        result.labels_inserted = len(res.all())
    log.debug("ingest: %d new, %d duplicate, %d rejected", len(result.inserted), result.duplicates, len(result.rejected))
    return result


def refused_by_storage(exc: BaseException) -> bool:
    """True when ``exc`` is the database refusing the data (SQLSTATE classes 22 and 23, or a value
    the driver cannot send), not storage being unreachable, locked or unmigrated."""
    if isinstance(exc, (sa_exc.DataError, sa_exc.IntegrityError, UnicodeError)):
        return True
    return isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError)


def _refusal(exc: BaseException) -> str:
    """The driver's own first line (never SQLAlchemy's text, which lists the bound parameters)."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return f"storage refused the record: {type(orig).__name__}: {first[:300]}"


def _merge(into: IngestResult, part: IngestResult, indexes: Sequence[int]) -> None:
    into.inserted += part.inserted
    into.duplicates += part.duplicates
    into.images_inserted += part.images_inserted
    into.labels_inserted += part.labels_inserted
    into.rejected += [Rejected(key=r.key, reason=r.reason, index=indexes[r.index]) for r in part.rejected]


def ingest_isolated(
    sessions: sessionmaker[Session],
    records: Sequence[SampleRecord],
    *,
    max_image_bytes: int = 20_000_000,
    label_source: str = DEFAULT_LABEL_SOURCE,
    tasks: TaskRules | None = None,
) -> IngestResult:
    """:func:`ingest_samples` in transactions of its own; records the database refuses are isolated.

    One transaction when nothing is refused; otherwise the batch is halved until each refused
    record is alone (k refused records among n cost O(k log n) transactions). Rejected indexes
    refer to ``records``.
    """
    result = IngestResult()
    pending: list[list[int]] = [list(range(len(records)))] if records else []
    while pending:
        idx = pending.pop()
        try:
            with sessions.begin() as session:
                part = ingest_samples(session, [records[i] for i in idx], max_image_bytes=max_image_bytes,
                                      label_source=label_source, tasks=tasks)
        except Exception as e:
            if not refused_by_storage(e):
                raise
            if len(idx) == 1:
                rec = records[idx[0]]
                result.rejected.append(Rejected(key=str(rec.id), reason=_refusal(e), index=idx[0]))
                log.warning("storage refused sample %r: %s", rec.id, _refusal(e))
                continue
            mid = len(idx) // 2
            pending += [idx[mid:], idx[:mid]]  # first half next: batch order is kept
            continue
        _merge(result, part, idx)
    result.rejected.sort(key=lambda r: r.index)
    return result
