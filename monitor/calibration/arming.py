"""When the label-based detectors arm: each active probe's reference against what it needs.

The disagreement and residual CUSUMs of a source are tuned once the probe's active reference has
that source ``complete`` with at least ``calibration.min_labels`` labelled samples. A pinned
reference (``vlmwatch reference set``) is complete at once; the default one only after the first
``calibration.reference_n`` labelled samples the probe scores. ``vlmwatch status`` shows this, with
an estimate from the last hour's label rate.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.calibration.reference import active_reference
from storage.models import Label, ProbeVersion, Sample, utcnow

__all__ = ["arming_report", "LABEL_SOURCES"]

LABEL_SOURCES = ("human", "ground_truth")  # the labels the "human" evidence source is made of


def _labels_last_hour(session: Session, model: str, now: datetime) -> int:
    q = (select(func.count()).select_from(Label).join(Sample, Sample.id == Label.sample_id)
         .where(Sample.model == model, Label.source.in_(LABEL_SOURCES), Label.created_at >= now - timedelta(hours=1)))
    return int(session.scalar(q) or 0)


def arming_report(session: Session, settings: Any, now: datetime | None = None) -> list[dict[str, Any]]:
    """One entry per active probe version: its reference, labels had and needed, armed or an estimate."""
    now = now or utcnow()
    cal = settings.calibration
    out = []
    for pv in session.scalars(select(ProbeVersion).where(ProbeVersion.active.is_(True)).order_by(ProbeVersion.model)):
        ref = active_reference(session, pv.id)
        st = ((ref.stats or {}).get("human") if ref is not None else None) or {}
        n = int(st.get("n") or 0)
        pinned = bool(ref is not None and ref.pinned)
        needed = int(cal.min_labels) if pinned else max(int(cal.reference_n), int(cal.min_labels))
        armed = bool(st.get("complete")) and n >= int(cal.min_labels)
        rate = _labels_last_hour(session, pv.model, now)
        eta = None if armed or not rate else round((needed - n) / rate, 2)
        out.append({"model": pv.model, "probe_version": pv.version,
                    "reference": "none" if ref is None else ("pinned" if pinned else "default"),
                    "labelled": n, "needed": needed, "armed": armed, "labels_last_hour": rate, "eta_hours": eta})
    return out
