"""What ``vlmwatch status`` shows: row counts, pending work, running totals, the last run of each job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import AlertDelivery, Base, JobRun, Label, Sample, Tally, utcnow

__all__ = ["TALLIES", "table_counts", "pending_work", "add_to_tally", "tallies", "last_job_runs", "status_report"]

TALLIES = ("labels_expired_unjoined",)  # running totals status always shows (0 until counted)


def add_to_tally(session: Session, name: str, n: int) -> None:
    """Add ``n`` to the running total ``name`` in the caller's transaction (an upsert: no lost update)."""
    if n <= 0:
        return
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(Tally).values(name=name, n=n, updated_at=utcnow())
    session.execute(stmt.on_conflict_do_update(index_elements=[Tally.name],
                                               set_={"n": Tally.n + stmt.excluded.n, "updated_at": stmt.excluded.updated_at}))


def tallies(session: Session) -> dict[str, int]:
    """Every running total, the known ones included at 0."""
    out = dict.fromkeys(TALLIES, 0)
    out.update((name, int(n)) for name, n in session.execute(select(Tally.name, Tally.n)))
    return out


def table_counts(session: Session) -> dict[str, int]:
    """Row count of every table in the schema, keyed by table name."""
    return {
        t.name: int(session.execute(select(func.count()).select_from(t)).scalar_one())
        for t in sorted(Base.metadata.tables.values(), key=lambda t: t.name)
    }


def pending_work(session: Session) -> dict[str, int]:
    """Work the daemon has not done yet."""

    def count(*where: Any, model: Any) -> int:
        return int(session.execute(select(func.count()).select_from(model).where(*where)).scalar_one())

    return {
        "samples_pending_scoring": count(Sample.status == "pending", model=Sample),
        "samples_image_unavailable": count(Sample.status == "image_unavailable", model=Sample),
        "deliveries_pending": count(AlertDelivery.status.in_(("pending", "sending")), model=AlertDelivery),
        "labels_waiting_for_sample": count(Label.sample_id.is_(None), model=Label),
    }


def last_job_runs(session: Session) -> dict[str, dict[str, Any]]:
    """The latest run of each daemon job, keyed by job name (times as ISO 8601 strings)."""
    latest = select(JobRun.job, func.max(JobRun.id).label("id")).group_by(JobRun.job).subquery()
    rows = session.execute(select(JobRun).join(latest, JobRun.id == latest.c.id).order_by(JobRun.job)).scalars()
    return {
        r.job: {
            "worker": r.worker,
            "started_at": r.started_at.isoformat(),
            "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            "ok": r.ok,
            "processed": r.processed,
            "error": r.error,
        }
        for r in rows
    }


def status_report(session: Session) -> dict[str, Any]:
    """Everything ``vlmwatch status`` prints: ``tables``, ``pending``, ``totals``, ``jobs``."""
    return {"tables": table_counts(session), "pending": pending_work(session), "totals": tallies(session),
            "jobs": last_job_runs(session)}
