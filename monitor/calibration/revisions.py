"""Label revisions as evidence events: a corrected verdict is a retraction plus a new observation.

A label keeps its id when its verdict changes (``storage.repo_labels.add_labels`` updates it in
place), so a consumer whose cursor passed the label would never see the correction. Every verdict
change is recorded in ``label_revisions`` (its own id space); :func:`load_revisions` turns the
revisions after a cursor into events:

* ``retract``: the observation as the consumer read it (old verdict; ``row_id`` = ``Label.id``),
* ``add``: the corrected observation (new verdict, same ``row_id``).

A sequential detector applies an event only if it consumed that label: ``row_id <= cursor`` and
not among its pending ids, and, for the human source, ``first_for_sample`` (the detectors take
the first human label of a sample). Otherwise it has not read the label yet and will read the
corrected verdict when it does. The calibration windows recompute every window that holds a
revised sample (``monitor.calibration.history``), so they always reflect the current verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session, aliased

from monitor.calibration.evidence import HUMAN_SOURCES, EvidenceRow
from storage.models import Label, LabelRevision, Sample, Score

__all__ = ["LabelRevisionEvent", "load_revisions"]


@dataclass(frozen=True)
class LabelRevisionEvent:
    revision_id: int  # LabelRevision.id: the cursor of this event stream
    retract: EvidenceRow  # the observation with its old verdict
    add: EvidenceRow  # the same observation with the new verdict
    first_for_sample: bool  # the sample's first human label (the one the detectors consumed)


def load_revisions(session: Session, model: str, probe_version_id: int, *, after_id: int = 0,
                   limit: int | None = None) -> list[LabelRevisionEvent]:
    """Revision events of human / ground-truth labels of ``model`` scored by ``probe_version_id``
    with ``LabelRevision.id > after_id``, in id order (a flip and a flip back are two events)."""
    earlier = aliased(Label)
    first = ~exists().where(earlier.sample_id == Label.sample_id, earlier.source.in_(HUMAN_SOURCES),
                            earlier.id < Label.id)
    q = (
        select(LabelRevision.id, LabelRevision.old_correct, LabelRevision.new_correct, Label.id, Label.sample_id,
               Label.source, Sample.ts, Score.p_correct, first.label("first"), Sample.task)  # fmt: skip
        .join(Label, Label.id == LabelRevision.label_id)
        .join(Sample, Sample.id == Label.sample_id)
        .join(Score, and_(Score.sample_id == Label.sample_id, Score.probe_version_id == probe_version_id))
        .where(Label.source.in_(HUMAN_SOURCES), Sample.model == model, LabelRevision.id > after_id)
        .order_by(LabelRevision.id)
    )
    if limit is not None:
        q = q.limit(limit)
    out = []
    for rev_id, old, new, label_id, sid, source, ts, score, is_first, task in session.execute(q):
        def row(correct: bool) -> EvidenceRow:
            return EvidenceRow(int(label_id), sid, ts, float(score), bool(correct), "human", source, task=task)

        out.append(LabelRevisionEvent(int(rev_id), row(old), row(new), bool(is_first)))
    return out
