"""Work claiming with row leases.

A worker claims pending samples by writing its id and a lease expiry on them. On PostgreSQL the
candidate rows are locked with ``FOR UPDATE SKIP LOCKED``, so concurrent workers never claim the
same row; a worker that dies leaves its rows with a lease that expires, after which any worker
claims them again. On SQLite there is one daemon (see :mod:`monitor.daemon.locks`), and the same
statements run inside SQLite's single-writer transaction.

Scores themselves are written idempotently (unique ``(sample_id, probe_version_id)``), so even a
worker that finishes after its lease expired cannot double-count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from storage.models import Sample, Score, utcnow

__all__ = [
    "claim_samples",
    "release_leases",
    "release_all_leases",
    "release_samples",
    "mark_failed",
    "mark_image_unavailable",
    "write_scores",
]

logger = logging.getLogger(__name__)


def _claimable(now: datetime) -> Any:
    return or_(Sample.lease_expires_at.is_(None), Sample.lease_expires_at < now)


def claim_samples(
    session: Session,
    *,
    worker: str,
    models: Iterable[str],
    limit: int,
    lease_seconds: float,
    now: datetime | None = None,
) -> list[Sample]:
    """Claim up to ``limit`` pending samples of ``models`` (oldest first) and commit the lease."""
    now = now or utcnow()
    models = list(models)
    if not models or limit <= 0:
        return []
    ids_q = (
        select(Sample.id)
        .where(Sample.status == "pending", Sample.model.in_(models), _claimable(now))
        .order_by(Sample.ts, Sample.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(session.scalars(ids_q))
    if not ids:
        session.rollback()
        return []
    expires = now + timedelta(seconds=lease_seconds)
    session.execute(
        update(Sample)
        .where(Sample.id.in_(ids), Sample.status == "pending")
        .values(lease_owner=worker, lease_expires_at=expires, attempts=Sample.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    rows = list(session.scalars(select(Sample).where(Sample.id.in_(ids), Sample.lease_owner == worker)))
    rows.sort(key=lambda s: (s.ts, s.id))
    return rows


def release_leases(session: Session, worker: str) -> int:
    """Give back this worker's unfinished claims (shutdown): they are claimable again at once."""
    res = session.execute(
        update(Sample)
        .where(Sample.lease_owner == worker, Sample.status == "pending")
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return int(res.rowcount or 0)


def release_samples(session: Session, sample_ids: Sequence[str]) -> int:
    """Give back claimed samples without counting the claim as an attempt (not their fault)."""
    if not sample_ids:
        return 0
    res = session.execute(
        update(Sample)
        .where(Sample.id.in_(sample_ids), Sample.status == "pending")
        .values(lease_owner=None, lease_expires_at=None, attempts=Sample.attempts - 1)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return int(res.rowcount or 0)


def release_all_leases(session: Session) -> int:
    """Clear every pending sample's lease: only when this process is the database's sole daemon
    (SQLite, lock held), so leases of a daemon that was killed need not wait to expire."""
    res = session.execute(
        update(Sample)
        .where(Sample.lease_owner.is_not(None), Sample.status == "pending")
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return int(res.rowcount or 0)


def mark_failed(session: Session, sample_ids: Sequence[str], error: str, *, max_attempts: int) -> int:
    """Record an error; samples that used up ``max_attempts`` claims become ``failed``."""
    if not sample_ids:
        return 0
    session.execute(
        update(Sample)
        .where(Sample.id.in_(sample_ids), Sample.status == "pending")
        .values(error=error[:2000], lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    res = session.execute(
        update(Sample)
        .where(Sample.id.in_(sample_ids), Sample.status == "pending", Sample.attempts >= max_attempts)
        .values(status="failed")
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return int(res.rowcount or 0)


def mark_image_unavailable(
    session: Session, sample_ids: Sequence[str], error: str, *, retry_at: datetime | None = None, max_attempts: int = 1
) -> int:
    """Samples whose image cannot be had: never scored without it.

    With ``retry_at`` (a transient failure) a sample that has claims left waits, pending, until
    then; the others become ``image_unavailable`` with ``error``. Returns how many became so.
    """
    if not sample_ids:
        return 0
    pending = (Sample.id.in_(sample_ids), Sample.status == "pending")
    final: tuple[Any, ...] = pending
    if retry_at is not None:
        session.execute(
            update(Sample).where(*pending, Sample.attempts < max_attempts)
            .values(error=error[:2000], lease_owner=None, lease_expires_at=retry_at)
            .execution_options(synchronize_session=False)
        )
        final = (*pending, Sample.attempts >= max_attempts)
    res = session.execute(
        update(Sample).where(*final)
        .values(status="image_unavailable", error=error[:2000], lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return int(res.rowcount or 0)


def _insert_ignore(session: Session) -> Any:
    """``INSERT INTO scores ... ON CONFLICT DO NOTHING`` for the session's database."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - storage supports these two
        raise RuntimeError(f"unsupported database {dialect!r}")
    return insert(Score.__table__).on_conflict_do_nothing()


def write_scores(session: Session, worker: str, rows: list[dict[str, Any]], now: datetime | None = None) -> int:
    """Insert scores and mark their samples scored, in one transaction (all or nothing).

    ``rows`` are :class:`~storage.models.Score` column dicts. Returns the number of new scores;
    a score that already exists (a re-run after a crash or an expired lease) is not written again.
    """
    if not rows:
        return 0
    now = now or utcnow()
    for r in rows:
        r.setdefault("created_at", now)
    res = session.execute(_insert_ignore(session).returning(Score.__table__.c.sample_id), rows)
    inserted = len(res.all())
    ids = [r["sample_id"] for r in rows]
    session.execute(
        update(Sample)
        .where(Sample.id.in_(ids), Sample.status.in_(("pending", "failed")))
        .values(status="scored", lease_owner=None, lease_expires_at=None, error=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if inserted != len(rows):
        logger.info("worker %s: %d of %d scores already existed (re-run)", worker, len(rows) - inserted, len(rows))
    return inserted


