"""Which detectors of each active probe are armed, what each still needs, and when the label-based
ones arm (``vlmwatch status``).

A detector arms once it can be tuned on the probe version's active reference
(:mod:`monitor.detect.tune`): the labelled ones (``cusum_disagreement:<source>``,
``cusum_residual:<source>``) when the reference has that source ``complete`` with at least
``calibration.min_labels`` samples, ``adwin_scores`` when it keeps max(30, min_labels) scores,
``adwin_spotcheck`` when its self-consistency source is complete. A pinned reference (``vlmwatch
reference set``) is complete at once; the default one only after the first
``calibration.reference_n`` labelled samples the probe scores, its spot checks once the reference
period (the first ``reference_n`` scored samples, checked at ``spotcheck.reference_rate``) is over
and they are at least ``min_labels``. For the human-label detectors the
report estimates when they arm from the last hour's label rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.calibration.evidence import HUMAN_SOURCES
from monitor.calibration.reference import active_reference
from monitor.detect.tune import DETECTORS
from storage.models import Label, ProbeVersion, Reference, Sample, utcnow

if TYPE_CHECKING:
    from monitor.config import CalibrationConfig, Settings

__all__ = ["DetectorReadiness", "ProbeReadiness", "needs", "readiness"]


@dataclass
class DetectorReadiness:
    detector: str
    armed: bool
    needs: str | None  # what it still needs from the reference; None when armed


@dataclass
class ProbeReadiness:
    """One active probe version: its reference, the human labels it has and needs, its detectors."""

    model: str
    probe_version: str
    reference: str  # "none", "default" or "pinned"
    labelled: int  # human labels in the reference
    needed: int  # human labels the reference needs before the human-label detectors arm
    labels_armed: bool  # the human-label detectors are armed
    labels_last_hour: int
    eta_hours: float | None  # hours until they arm at the last hour's label rate; None: armed or no labels
    detectors: list[DetectorReadiness] = field(default_factory=list)


def needs(ref: Reference | None, detector: str, cal: CalibrationConfig) -> str | None:
    """What ``detector`` still needs from the reference before it can be tuned and armed; None: armed."""
    min_n = int(cal.min_labels)
    target = int(cal.reference_n)
    kind, _, source = detector.partition(":")
    if ref is None:
        return "a reference (none yet)"
    stats = ref.stats or {}
    if kind == "adwin_scores":
        have = len(stats.get("unlabelled_scores") or [])
        want = max(30, min_n)
        return None if have >= want else f"{want - have} more scored samples in the reference ({have} so far)"
    src = "self_consistency" if kind == "adwin_spotcheck" else source
    st = stats.get(src) if isinstance(stats.get(src), dict) else {}
    have = int(st.get("n", 0))
    what = "spot checks" if src == "self_consistency" else f"{src} labels"
    if src == "self_consistency" and not ref.pinned and have >= min_n and not st.get("complete"):
        return (f"the rest of the reference period spot-checked (its first {target} scored samples; "
                f"{have} checks so far)")
    if not st.get("complete") or have < min_n:
        of = min_n if ref.pinned or src == "self_consistency" else target
        return f"{max(min_n, of) - have} more {what} in the reference ({have} of {of})"
    return None


def _labels_last_hour(session: Session, model: str, now: datetime) -> int:
    q = (select(func.count()).select_from(Label).join(Sample, Sample.id == Label.sample_id)
         .where(Sample.model == model, Label.source.in_(HUMAN_SOURCES), Label.created_at >= now - timedelta(hours=1)))
    return int(session.scalar(q) or 0)


def _probe_readiness(session: Session, cal: CalibrationConfig, pv: ProbeVersion, now: datetime) -> ProbeReadiness:
    ref = active_reference(session, pv.id)
    st = ((ref.stats or {}).get("human") if ref is not None else None) or {}
    n = int(st.get("n") or 0)
    pinned = bool(ref is not None and ref.pinned)
    needed = int(cal.min_labels) if pinned else max(int(cal.reference_n), int(cal.min_labels))
    armed = bool(st.get("complete")) and n >= int(cal.min_labels)
    rate = _labels_last_hour(session, pv.model, now)
    detectors = []
    for det in DETECTORS:
        need = needs(ref, det, cal)
        detectors.append(DetectorReadiness(det, need is None, need))
    return ProbeReadiness(
        model=pv.model, probe_version=pv.version,
        reference="none" if ref is None else ("pinned" if pinned else "default"),
        labelled=n, needed=needed, labels_armed=armed, labels_last_hour=rate,
        eta_hours=None if armed or not rate else round((needed - n) / rate, 2),
        detectors=detectors,
    )


def readiness(session: Session, settings: Settings, now: datetime | None = None) -> list[ProbeReadiness]:
    """One entry per active probe version (by model): which detectors are armed, what each still needs."""
    now = now or utcnow()
    pvs = session.scalars(select(ProbeVersion).where(ProbeVersion.active.is_(True))
                          .order_by(ProbeVersion.model, ProbeVersion.id))
    return [_probe_readiness(session, settings.calibration, pv, now) for pv in pvs]
