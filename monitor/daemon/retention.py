"""The retention job: image bytes are purged once no sample needs them, data ages out.

An image is *needed* while a sample that shows it is still pending scoring or may still be
spot-checked. A pending sample whose bytes are gone (TTL) is not scored without them: the score
job marks it ``image_unavailable`` (an image known by URL is fetched again instead). Unless ``storage.keep_images`` is set, bytes of images nobody needs are deleted
(the row, hash, size and dimensions stay); after ``storage.image_ttl_hours`` they are deleted
whether needed or not. Samples (with their scores, spot checks and labels, by cascade), job runs
and calibration history older than ``daemon.retention_days`` are deleted. Labels by response id
whose sample has not arrived after ``storage.unjoined_label_ttl_hours`` are deleted and counted
(``vlmwatch_labels_expired_total``, and the ``labels_expired_unjoined`` total of ``vlmwatch status``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.orm import Session

from monitor import metrics
from monitor.config import Settings
from monitor.daemon.runner import JobContext, JobResult
from storage.models import CalibrationWindow, Image, InputFeature, JobRun, Label, Sample, Score, SpotCheck, utcnow
from storage.repo_labels import expire_waiting_labels

__all__ = ["purge_images", "delete_old", "expire_unjoined_labels", "RetentionJob"]

logger = logging.getLogger(__name__)

_NEEDED_STATUS = ("pending",)
_NEEDED_SPOTCHECK = ("pending", "selected")


def purge_images(session: Session, settings: Settings, now: datetime | None = None, limit: int = 1000) -> int:
    """Delete image bytes that are no longer needed (or past their TTL). Returns images purged.

    One transaction: the candidates are locked first (PostgreSQL ``FOR UPDATE SKIP LOCKED``, so
    rows an ingest is linking a new sample to right now are left for the next run), then the
    UPDATE re-checks the condition itself, seeing every sample committed since the SELECT. An
    ingest that commits after that re-stores the bytes it carries
    (:func:`storage.repo_samples.ingest_samples`), so no pending sample is left without its image.
    """
    now = now or utcnow()
    ttl_cut = now - timedelta(hours=settings.storage.image_ttl_hours)
    needed = exists().where(
        Sample.image_sha256 == Image.sha256,
        or_(Sample.status.in_(_NEEDED_STATUS), Sample.spotcheck_status.in_(_NEEDED_SPOTCHECK)),
    )
    cond = [Image.purged_at.is_(None), Image.data.is_not(None)]
    if settings.storage.keep_images:
        cond.append(Image.created_at < ttl_cut)
    else:
        cond.append(or_(~needed, Image.created_at < ttl_cut))
    shas = list(session.scalars(
        select(Image.sha256).where(*cond).limit(limit).with_for_update(skip_locked=True, of=Image)
    ))
    if not shas:
        session.rollback()
        return 0
    res = session.execute(
        update(Image)
        .where(Image.sha256.in_(shas), *cond)
        .values(data=None, purged_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    n = int(res.rowcount or 0)
    metrics.IMAGES_PURGED.inc(n)
    return n


def delete_old(session: Session, settings: Settings, now: datetime | None = None, limit: int = 1000) -> int:
    """Delete samples and history older than ``daemon.retention_days``. Returns rows deleted."""
    now = now or utcnow()
    cut = now - timedelta(days=settings.daemon.retention_days)
    ids = list(session.scalars(select(Sample.id).where(Sample.ts < cut).limit(limit)))
    n = 0
    if ids:
        # children first: SQLite only cascades with foreign keys on, so don't rely on it
        for model in (Score, SpotCheck, Label, InputFeature):
            session.execute(delete(model).where(model.sample_id.in_(ids)).execution_options(synchronize_session=False))
        n += int(session.execute(delete(Sample).where(Sample.id.in_(ids))).rowcount or 0)
    n += int(session.execute(delete(CalibrationWindow).where(CalibrationWindow.window_end < cut)).rowcount or 0)
    job_cut = now - timedelta(days=min(settings.daemon.retention_days, settings.daemon.job_runs_keep_days))
    n += int(session.execute(delete(JobRun).where(JobRun.started_at < job_cut)).rowcount or 0)
    session.commit()
    return n


def expire_unjoined_labels(session: Session, settings: Settings, now: datetime | None = None, limit: int = 1000) -> int:
    """Delete (and count) up to ``limit`` labels that waited for their sample longer than the TTL."""
    ttl = settings.storage.unjoined_label_ttl_hours
    if ttl <= 0:
        return 0
    n = expire_waiting_labels(session, (now or utcnow()) - timedelta(hours=ttl), limit)
    session.commit()
    if n:
        metrics.LABELS_EXPIRED.inc(n)
        logger.info("retention: %d label(s) expired after waiting %.0f h for a sample that never arrived", n, ttl)
    return n


class RetentionJob:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, ctx: JobContext) -> JobResult:
        total = 0
        with ctx.sessions() as s:
            for batch in (purge_images, expire_unjoined_labels):  # batch after batch, until none is left
                while not ctx.should_stop():
                    got = batch(s, self.settings)
                    total += got
                    if got == 0:
                        break
            if not ctx.should_stop():
                total += delete_old(s, self.settings)
        if total:
            logger.info("retention: %d images purged / rows deleted", total)
        return JobResult(total)
