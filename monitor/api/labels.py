"""``POST /v1/labels``: API label bodies -> storage's idempotent :func:`storage.repo_labels.add_labels`."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException
from sqlalchemy.orm import Session

from monitor.api.schemas import LabelIn, LabelsOut, RejectedOut

__all__ = ["store_labels"]


def store_labels(session: Session, items: Sequence[LabelIn]) -> LabelsOut:
    """Store labels in the caller's transaction; 422 naming the field when none could be stored."""
    from storage.records import LabelRecord
    from storage.repo_labels import add_labels

    records = [
        LabelRecord(correct=it.correct, source=it.source, sample_id=it.sample_id, response_id=it.response_id)
        for it in items
    ]
    res = add_labels(session, records)
    rejected = []
    for r in res.rejected:
        field = "sample_id" if "sample_id" in r.reason else ("response_id" if "response_id" in r.reason else "body")
        prefix = f"{r.index}." if len(items) > 1 else ""
        rejected.append(RejectedOut(index=r.index, id=r.key, reason=f"{prefix}{field}: {r.reason}"))
    out = LabelsOut(
        stored=res.inserted, updated=res.updated, duplicates=res.unchanged, waiting=res.waiting, rejected=rejected
    )
    if rejected and not (res.inserted or res.updated or res.unchanged):
        status = 404 if all("unknown sample_id" in r.reason for r in rejected) else 422
        raise HTTPException(status, detail=out.model_dump())
    return out
