"""Correctness labels: stored by sample id or response id, joined to samples that arrive later.

One label per (sample, source): sending a label again with another verdict updates it (a human
correcting themselves) and records a ``label_revisions`` row (old and new verdict), the event
windows and detectors read the correction from; sending the same one again changes nothing. A label by ``response_id``
whose sample is not stored yet waits with ``sample_id = NULL`` and is joined when the sample is
ingested (:func:`join_waiting_labels`, called by the sample ingest).

The join is race-free: "is the sample stored?" on the label side and "join the labels waiting for
these samples" on the sample side run under one lock (:func:`lock_label_join`, held to the end of
the transaction), so whichever commits second sees the other's rows. Without it, under READ
COMMITTED (PostgreSQL) or SQLite's snapshot-per-statement reads, a label checked just before its
sample committed and stored just after the sample's join waited forever.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, false, func, select, text, update
from sqlalchemy.orm import Session

from storage._sql import chunks, in_values, insert_ignore
from storage.models import LABEL_SOURCES, Label, LabelRevision, Sample, utcnow
from storage.records import LabelRecord, Rejected
from storage.repo_status import add_to_tally

__all__ = ["LabelResult", "add_labels", "join_waiting_labels", "lock_label_join", "expire_waiting_labels"]

log = logging.getLogger(__name__)

_LABELS = Label.__table__


@dataclass
class LabelResult:
    """What :func:`add_labels` did with a batch."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    waiting: int = 0  # stored by response_id, sample not there yet
    rejected: list[Rejected] = field(default_factory=list)


_JOIN_LOCK_KEY = 0x766C6D77_6A6F696E  # PostgreSQL advisory lock of label <-> sample joins ("vlmwjoin")


def lock_label_join(session: Session) -> None:
    """Serialise label/sample joins until the caller's transaction ends.

    PostgreSQL: a transaction-scoped advisory lock; each statement after it (READ COMMITTED) sees
    everything the previous holder committed. SQLite: the database's single write lock, taken now
    by a write that changes nothing, so the reads that follow see the latest commit. Take it
    before reading whether the other side is there, and hold nothing another holder waits for.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _JOIN_LOCK_KEY})
    else:
        session.execute(update(_LABELS).where(false()).values(correct=_LABELS.c.correct))


def join_waiting_labels(session: Session, response_ids: Iterable[str]) -> int:
    """Attach labels that arrived before their sample to the samples now stored; returns how many.

    The samples must already be written in this transaction; takes :func:`lock_label_join`.
    """
    rids = sorted({r for r in response_ids if r})
    joined = 0
    if not rids:
        return 0
    lock_label_join(session)
    if session.execute(select(_LABELS.c.id).where(_LABELS.c.sample_id.is_(None)).limit(1)).first() is None:
        return 0  # the common case: no label is waiting for its sample
    for part in chunks(rids):
        sid = (
            select(func.min(Sample.id)).where(Sample.response_id == _LABELS.c.response_id).scalar_subquery()
        )
        res = session.execute(
            update(_LABELS)
            .where(_LABELS.c.sample_id.is_(None), _LABELS.c.response_id.in_(part))
            .values(sample_id=sid)
        )
        joined += res.rowcount or 0
    if joined:
        log.info("joined %d label(s) that arrived before their sample", joined)
    return joined


def _check(lab: LabelRecord) -> str | None:
    if not isinstance(lab.correct, bool):
        return "field 'correct' must be true or false"
    if lab.source not in LABEL_SOURCES:
        return f"field 'source' must be one of {', '.join(LABEL_SOURCES)}, not {lab.source!r}"
    if not lab.sample_id and not lab.response_id:
        return "give 'sample_id' or 'response_id'"
    for name in ("sample_id", "response_id"):
        v = getattr(lab, name)
        if v is not None and (not isinstance(v, str) or len(v) > 128):
            return f"field '{name}' must be a string of at most 128 characters"
    if lab.value is not None and not isinstance(lab.value, (int, float)):
        return "field 'value' must be a number"
    return None


def add_labels(session: Session, labels: Sequence[LabelRecord]) -> LabelResult:
    """Store ``labels`` in the caller's transaction; bad ones are returned in ``rejected``."""
    result = LabelResult()
    dialect = session.get_bind().dialect.name
    valid: list[tuple[int, LabelRecord]] = []
    for i, lab in enumerate(labels):
        reason = _check(lab)
        if reason:
            result.rejected.append(Rejected(key=str(lab.sample_id or lab.response_id), reason=reason, index=i))
        else:
            valid.append((i, lab))
    sids = sorted({lab.sample_id for _, lab in valid if lab.sample_id})
    rids = sorted({lab.response_id for _, lab in valid if lab.response_id and not lab.sample_id})
    if rids:
        lock_label_join(session)  # before looking for the samples: a racing ingest then joins us or we see it
    rid_of: dict[str, str | None] = {}
    sid_of: dict[str, str] = {}
    for part in chunks(sids):
        for sid, rid in session.execute(select(Sample.id, Sample.response_id).where(in_values(Sample.id, part, dialect))):
            rid_of[sid] = rid
    for part in chunks(rids):
        for sid, rid in session.execute(select(Sample.id, Sample.response_id).where(in_values(Sample.response_id, part, dialect))):
            sid_of.setdefault(rid, sid)

    # resolve each label to (sample_id, response_id); later labels in the batch win
    resolved: dict[tuple[str, str, str], dict[str, Any]] = {}
    for i, lab in valid:
        if lab.sample_id:
            if lab.sample_id not in rid_of:
                result.rejected.append(Rejected(key=lab.sample_id, reason=f"unknown sample_id {lab.sample_id!r}", index=i))
                continue
            sid, rid = lab.sample_id, rid_of[lab.sample_id]
        else:
            rid = lab.response_id
            sid = sid_of.get(rid or "")
        key = ("s", sid, lab.source) if sid else ("r", rid or "", lab.source)
        resolved[key] = {"sample_id": sid, "response_id": rid, "source": lab.source, "correct": lab.correct,
                         "value": None if lab.value is None else float(lab.value)}
    if not resolved:
        return result

    existing: dict[tuple[str, str, str], Any] = {}
    want_s = sorted({k[1] for k in resolved if k[0] == "s"})
    want_r = sorted({v["response_id"] for v in resolved.values() if v["response_id"]})
    cols = (_LABELS.c.id, _LABELS.c.sample_id, _LABELS.c.response_id, _LABELS.c.source, _LABELS.c.correct, _LABELS.c.value)
    queries = [select(*cols).where(in_values(_LABELS.c.sample_id, p, dialect)) for p in chunks(want_s)]
    queries += [select(*cols).where(in_values(_LABELS.c.response_id, p, dialect)) for p in chunks(want_r)]
    for q in queries:
        for row in session.execute(q):
            if row.sample_id:
                existing[("s", row.sample_id, row.source)] = row
            if row.response_id:
                existing.setdefault(("r", row.response_id, row.source), row)

    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    revisions: list[dict[str, Any]] = []
    for key, v in resolved.items():
        row = existing.get(key)
        if row is None and v["response_id"]:
            row = existing.get(("r", v["response_id"], v["source"]))
        if row is None:
            inserts.append({**v, "created_at": utcnow()})
            if not v["sample_id"]:
                result.waiting += 1
        elif row.correct == v["correct"] and row.value == v["value"] and (row.sample_id or not v["sample_id"]):
            result.unchanged += 1
        else:
            updates.append({"b_id": row.id, "b_correct": v["correct"], "b_value": v["value"],
                            "b_sample_id": v["sample_id"] or row.sample_id})
            if row.correct != v["correct"]:
                revisions.append({"label_id": row.id, "old_correct": row.correct, "new_correct": v["correct"],
                                  "created_at": utcnow()})
    if inserts:
        res = session.execute(insert_ignore(_LABELS, dialect).returning(_LABELS.c.id), inserts)
        result.inserted = len(res.all())
        result.unchanged += len(inserts) - result.inserted  # lost a race to an identical insert
    if updates:
        stmt = (
            update(_LABELS)
            .where(_LABELS.c.id == bindparam("b_id"))
            .values(correct=bindparam("b_correct"), value=bindparam("b_value"), sample_id=bindparam("b_sample_id"))
        )
        session.connection().execute(stmt, updates)
        result.updated = len(updates)
    if revisions:
        session.execute(LabelRevision.__table__.insert(), revisions)
    return result


def expire_waiting_labels(session: Session, older_than: datetime, limit: int = 1000) -> int:
    """Delete up to ``limit`` labels still waiting for their sample that arrived before ``older_than``,
    and add them to the ``labels_expired_unjoined`` total, in the caller's transaction.

    Labels by response id for requests that were never sampled (most of them, at a 10% rate) would
    otherwise wait forever. A label joined meanwhile is kept: the condition is checked again on the
    row being deleted (PostgreSQL re-evaluates it after a concurrent join commits).
    """
    due = (_LABELS.c.sample_id.is_(None), _LABELS.c.created_at < older_than)
    ids = select(_LABELS.c.id).where(*due).order_by(_LABELS.c.id).limit(limit)
    n = int(session.execute(delete(_LABELS).where(_LABELS.c.id.in_(ids), *due)).rowcount or 0)
    add_to_tally(session, "labels_expired_unjoined", n)
    return n
