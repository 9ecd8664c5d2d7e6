"""Reference statistics a probe version is compared against, per evidence source.

* Default: the first ``calibration.reference_n`` labelled samples (by sample time) after the probe
  was activated. Until a source has that many, its stats are recomputed as evidence arrives; once
  it has, they are frozen (``complete``) and the detectors can be tuned on them. Spot checks are
  the exception: their part is the spot checks of the *reference period*, the first
  ``reference_n`` samples the probe scores (:func:`reference_period_end`), which the spot-check job
  checks at ``spotcheck.reference_rate``; it is complete once the period is over and decided and
  holds ``calibration.min_labels`` checks (:func:`_period_spot_checks`).
* Pinned: ``vlmwatch reference set --window START..END`` takes all evidence in the window, marks
  the reference ``pinned`` and makes it the only active one (detectors re-tune and restart).

``stats[source]`` holds n, the disagreement count and rate at the probe threshold, the window
metrics, and bounded samples of scores and residuals that tuning simulates from.
``stats["tasks"][task][source]`` holds the same for the reference's samples of each task
(``Sample.task``), frozen with the source's overall part: what a task slice's detectors
(``monitor.detect``) are tuned on and compared against.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from monitor.calibration.evidence import SOURCES, EvidenceRow, as_arrays, dedupe_human, load_evidence, weights_of
from monitor.calibration.metrics import window_metrics
from storage._sql import insert_ignore
from storage.models import ProbeVersion, Reference, Sample, Score, SpotCheck, utcnow

if TYPE_CHECKING:
    from monitor.config import CalibrationConfig, Settings

__all__ = [
    "source_stats", "task_stats", "active_reference", "ensure_default_reference", "set_reference", "CalibrationReferenceError",
    "reference_period_end",
]

log = logging.getLogger(__name__)

MAX_KEPT = 5000  # scores / residuals kept in the reference for simulation


class CalibrationReferenceError(ValueError):
    """A reference cannot be built (unknown model, empty window, too little evidence)."""


def source_stats(rows: list[EvidenceRow], threshold: float, cal: CalibrationConfig,
                 target_n: int | None) -> dict[str, Any]:
    """Reference statistics of one source's evidence rows.

    ``metrics`` and ``disagreement_weighted`` weight spot checks by 1 / inclusion probability (the
    whole scored population); ``disagreement`` is the plain share of the rows, the rate of the
    unweighted stream; ``weights`` are kept beside ``scores`` for simulation."""
    s, y = as_arrays(rows)
    w = weights_of(rows)
    n = int(s.size)
    disagree = (s >= threshold) != (y == 1.0)
    rng = np.random.default_rng(0)
    keep = rng.permutation(n)[:MAX_KEPT] if n > MAX_KEPT else np.arange(n)
    return {
        "n": n,
        "complete": target_n is None or n >= target_n,
        "disagreements": int(disagree.sum()),
        "disagreement": float(disagree.mean()) if n else None,
        "disagreement_weighted": float((w * disagree).sum() / w.sum()) if n else None,
        "metrics": window_metrics(s, y, threshold=threshold, bins=cal.bins, bootstrap=cal.bootstrap if n >= 10 else 0,
                                  weights=w),
        "scores": [round(float(v), 5) for v in s[keep]],
        "weights": [round(float(v), 5) for v in w[keep]],
        "residuals": [round(float(v), 5) for v in (y - s)[keep]],
        "agree_bits": [int(v) for v in (~disagree)[keep]],
        "first_ts": rows[0].ts.isoformat() if rows else None,
        "last_ts": rows[-1].ts.isoformat() if rows else None,
    }


def task_stats(stats: dict[str, Any], source: str, rows: list[EvidenceRow], threshold: float,
               cal: CalibrationConfig, complete: bool) -> dict[str, Any]:
    """``stats["tasks"]`` with ``source``'s part of each task replaced by the stats of ``rows`` of that task."""
    tasks = {t: dict(v) for t, v in (stats.get("tasks") or {}).items()}
    for t in sorted({r.task for r in rows if r.task}):
        part = [r for r in rows if r.task == t]
        tasks.setdefault(t, {})[source] = {**source_stats(part, threshold, cal, None), "complete": complete}
    return tasks


def active_reference(session: Session, probe_version_id: int) -> Reference | None:
    return session.scalars(
        select(Reference).where(Reference.probe_version_id == probe_version_id, Reference.active.is_(True))
        .order_by(Reference.id.desc())
    ).first()


def _scores_sample(session: Session, pv: ProbeVersion, start: datetime | None, end: datetime | None) -> list[float]:
    q = select(Score.p_correct).join(Sample, Sample.id == Score.sample_id).where(Score.probe_version_id == pv.id)
    if start is not None:
        q = q.where(Sample.ts >= start)
    if end is not None:
        q = q.where(Sample.ts <= end)
    return [round(float(v), 5) for (v,) in session.execute(q.order_by(Sample.ts).limit(MAX_KEPT))]


def _first_scores(session: Session, pv: ProbeVersion, since: datetime, n: int) -> tuple[list[float], str | None]:
    q = (select(Score.p_correct, Sample.ts).join(Sample, Sample.id == Score.sample_id)
         .where(Score.probe_version_id == pv.id, Sample.ts >= since).order_by(Sample.ts, Score.id).limit(n))
    rows = session.execute(q).all()
    return [round(float(v), 5) for v, _ in rows], (rows[-1][1].isoformat() if rows else None)


def reference_period_end(session: Session, pv: ProbeVersion, n: int) -> datetime | None:
    """Sample time of the ``n``-th sample ``pv`` scored after its activation: the end of its default
    reference period (samples from activation to this time); None while the period lasts."""
    since = pv.activated_at or pv.created_at
    q = (select(Sample.ts).join(Score, Score.sample_id == Sample.id)
         .where(Score.probe_version_id == pv.id, Sample.ts >= since).order_by(Sample.ts, Score.id)
         .offset(max(n, 1) - 1).limit(1))
    return session.scalar(q)


def _period_spot_checks(session: Session, settings: Settings, pv: ProbeVersion,
                        since: datetime) -> tuple[list[EvidenceRow], bool]:
    """(rows, complete) of the default reference's spot checks: those of the reference period.

    Complete once the period is over, decided (none of its samples still pending a spot-check
    decision, or a later sample already checked: candidates go oldest first) and holding at least
    ``calibration.min_labels`` checks. A decided period with fewer (the hourly budget scaled the
    reference rate down) takes the first ``min_labels`` checks after activation instead."""
    cal = settings.calibration
    src = "self_consistency"
    end = reference_period_end(session, pv, int(cal.reference_n))
    if end is None:
        return load_evidence(session, pv.model, pv.id, src, start=since, oldest=int(cal.reference_n)), False
    rows = load_evidence(session, pv.model, pv.id, src, start=since, end=end + timedelta(microseconds=1),
                         oldest=int(cal.reference_n))
    in_period = (select(Sample.id).join(Score, Score.sample_id == Sample.id)
                 .where(Score.probe_version_id == pv.id, Sample.ts >= since))
    pending = session.scalar(in_period.where(Sample.ts <= end, Sample.spotcheck_status == "pending").limit(1))
    later = session.scalar(in_period.join(SpotCheck, SpotCheck.sample_id == Sample.id).where(Sample.ts > end).limit(1))
    if pending is not None and later is None:
        return rows, False
    if len(rows) < int(cal.min_labels):
        rows = load_evidence(session, pv.model, pv.id, src, start=since, oldest=int(cal.min_labels))
    return rows, len(rows) >= int(cal.min_labels)


def _complete_default(ref: Reference, target: int) -> bool:
    return all((ref.stats.get(src) or {}).get("complete") for src in SOURCES) and \
        len(ref.stats.get("unlabelled_scores") or []) >= min(target, MAX_KEPT)


def ensure_default_reference(session: Session, settings: Settings, pv: ProbeVersion) -> Reference | None:
    """Create or grow the default reference of ``pv``; frozen parts are left alone (caller commits).

    Human labels: the first ``reference_n`` labelled samples after activation; spot checks: those of
    the reference period (:func:`_period_spot_checks`). For the label-free detectors: the first
    ``reference_n`` scores, so they work before any label arrives.
    """
    ref = active_reference(session, pv.id)
    target = int(settings.calibration.reference_n)
    if ref is not None and (ref.pinned or _complete_default(ref, target)):
        return ref
    since = pv.activated_at or pv.created_at
    stats = dict(ref.stats) if ref is not None else {}
    changed = False
    for src in SOURCES:
        if (stats.get(src) or {}).get("complete"):
            continue
        if src == "self_consistency":
            rows, complete = _period_spot_checks(session, settings, pv, since)
        else:
            rows = dedupe_human(load_evidence(session, pv.model, pv.id, src, start=since, oldest=target * 2))[:target]
            complete = len(rows) >= target
        old = stats.get(src) or {}
        if not rows or (old.get("n"), bool(old.get("complete"))) == (len(rows), complete):
            continue
        stats[src] = {**source_stats(rows, pv.threshold, settings.calibration, None), "complete": complete}
        stats["tasks"] = task_stats(stats, src, rows, pv.threshold, settings.calibration, complete)
        changed = True
    kept = stats.get("unlabelled_scores") or []
    if len(kept) < min(target, MAX_KEPT):
        scores, last_ts = _first_scores(session, pv, since, min(target, MAX_KEPT))
        if len(scores) != len(kept):
            stats["unlabelled_scores"], stats["unlabelled_last_ts"] = scores, last_ts
            changed = True
    if not changed:
        return ref
    ends = [v["last_ts"] for v in stats.values() if isinstance(v, dict) and v.get("last_ts")]
    ends += [stats["unlabelled_last_ts"]] if stats.get("unlabelled_last_ts") else []
    last = max((datetime.fromisoformat(t) for t in ends), default=since)
    if ref is None:
        return _insert_default(session, pv, since, last, stats)
    ref.stats = stats
    ref.window_end = last
    session.flush()
    return ref


def _insert_default(session: Session, pv: ProbeVersion, start: datetime, end: datetime,
                    stats: dict[str, Any]) -> Reference | None:
    """Insert the default reference unless another job just did; returns the active one.

    The calibrate and detect jobs run on the same tick: both may find no reference and get here.
    The partial unique index (one active reference per probe version) lets only one row in; the
    other insert does nothing (on PostgreSQL it waits for the first to commit) and reads that row.
    """
    table = Reference.__table__
    row = session.execute(
        insert_ignore(table, session.get_bind().dialect.name)
        .values(model=pv.model, probe_version_id=pv.id, window_start=start, window_end=end, pinned=False,
                active=True, stats=stats, created_at=utcnow())
        .returning(table.c.id)
    ).first()
    if row is None:
        log.debug("default reference for %s probe %s was just created by another job", pv.model, pv.version)
        return active_reference(session, pv.id)
    log.info("default reference started for %s probe %s", pv.model, pv.version)
    return session.get(Reference, row[0])


def _probe_version(session: Session, model: str, version: str | None) -> ProbeVersion:
    q = select(ProbeVersion).where(ProbeVersion.model == model)
    q = q.where(ProbeVersion.version == version) if version else q.where(ProbeVersion.active.is_(True))
    pv = session.scalars(q.order_by(ProbeVersion.id.desc())).first()
    if pv is None:
        what = f"probe version {version!r}" if version else "an active probe"
        raise CalibrationReferenceError(f"model {model!r} has no {what}; register one with `vlmwatch probe`")
    return pv


def set_reference(
    session: Session, settings: Settings, model: str, start: datetime, end: datetime, probe_version: str | None = None
) -> Reference:
    """Pin the evidence in [start, end] as the reference of ``model``'s (active) probe (caller commits)."""
    if end <= start:
        raise CalibrationReferenceError(
            f"reference window is empty: end {end.isoformat()} is not after start {start.isoformat()}"
        )
    pv = _probe_version(session, model, probe_version)
    stats: dict[str, Any] = {}
    for src in SOURCES:
        rows = load_evidence(session, model, pv.id, src, start=start, end=end)
        if src == "human":
            rows = dedupe_human(rows)
        if rows:
            stats[src] = source_stats(rows, pv.threshold, settings.calibration, None)
            stats["tasks"] = task_stats(stats, src, rows, pv.threshold, settings.calibration, True)
    n = max((stats[s]["n"] for s in SOURCES if s in stats), default=0)
    if n < settings.calibration.min_labels:
        raise CalibrationReferenceError(
            f"window {start.isoformat()}..{end.isoformat()} has {n} labelled samples for {model} probe {pv.version}; "
            f"a reference needs at least calibration.min_labels={settings.calibration.min_labels}"
        )
    stats["unlabelled_scores"] = _scores_sample(session, pv, start, end)
    session.execute(update(Reference).where(Reference.probe_version_id == pv.id).values(active=False))
    ref = Reference(model=model, probe_version_id=pv.id, window_start=start, window_end=end, pinned=True,
                    active=True, stats=stats)
    session.add(ref)
    session.flush()
    log.info("reference pinned for %s probe %s: %s..%s (%s)", model, pv.version, start, end,
             ", ".join(f"{k}: n={stats[k]['n']}" for k in SOURCES if k in stats))
    return ref
