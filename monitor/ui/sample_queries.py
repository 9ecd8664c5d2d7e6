"""What the samples browser and a sample's page read: keyset pages with a bounded scan.

A page is one model's samples, newest first, ordered by ``(ts, id)`` and continued from the
last row shown (keyset pagination on ``ix_samples_model_ts``: no OFFSET, so page 1,000 costs
what page 1 does). Filters (probe score range, label agreement, spot-check outcome, route) are
applied to at most ``SCAN_ROWS`` samples past the cursor: a filter that matches rarely fills
fewer rows, and the page says how far back it searched and offers to search on from there,
instead of scanning a million rows for one page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from monitor.spotcheck.answers import SPOTCHECK_CORRECT_AT
from storage.models import Image, Label, ProbeVersion, Sample, Score, SpotCheck

__all__ = ["SampleFilter", "SampleRow", "SamplesPage", "samples_page", "sample_detail", "image_bytes",
           "LABEL_FILTERS", "SPOTCHECK_FILTERS", "PAGE_ROWS", "SCAN_ROWS", "routes_of", "rows_for_ids"]

PAGE_ROWS = 50
SCAN_ROWS = 10_000  # samples examined per page at most (an index range walk plus a few lookups each)
SNIPPET = 160  # characters of the prompt and answer shown in the list
LABEL_FILTERS = ("any", "labelled", "unlabelled", "agree", "disagree")
SPOTCHECK_FILTERS = ("any", "checked", "unchecked", "consistent", "inconsistent")
MAX_ROUTES = 50


@dataclass(frozen=True)
class SampleFilter:
    model: str
    probe_version_id: int | None
    threshold: float = 0.5  # the probe's decision threshold: score >= it predicts "correct"
    route: str | None = None
    score_min: float | None = None
    score_max: float | None = None
    label: str = "any"  # one of LABEL_FILTERS: agree/disagree = the probe's verdict vs the label
    spotcheck: str = "any"  # one of SPOTCHECK_FILTERS: consistent = the served answer won the K-answer vote
    before: tuple[datetime, str] | None = None  # keyset cursor: (ts, id) of the last row already shown

    def __post_init__(self) -> None:
        if self.label not in LABEL_FILTERS:
            raise ValueError(f"label must be one of {', '.join(LABEL_FILTERS)}, got {self.label!r}")
        if self.spotcheck not in SPOTCHECK_FILTERS:
            raise ValueError(f"spotcheck must be one of {', '.join(SPOTCHECK_FILTERS)}, got {self.spotcheck!r}")
        for name in ("score_min", "score_max"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")


@dataclass(frozen=True)
class SampleRow:
    id: str
    ts: datetime
    route: str
    status: str
    prompt: str
    answer: str
    p_correct: float | None
    label: bool | None
    label_source: str | None
    sc_agreement: float | None

    def disagrees(self, threshold: float) -> bool | None:
        """The probe's verdict differs from the label (None without a score or a label)."""
        if self.p_correct is None or self.label is None:
            return None
        return (self.p_correct >= threshold) != self.label


@dataclass
class SamplesPage:
    rows: list[SampleRow]
    next_before: tuple[datetime, str] | None  # continue from here (None: nothing older)
    searched_to: datetime | None = None  # set when the scan limit ended the page before it filled
    threshold: float = 0.5


def _window(f: SampleFilter, scan: int):
    q = select(Sample.id, Sample.ts).where(Sample.model == f.model)
    if f.before is not None:
        ts, sid = f.before
        q = q.where(Sample.ts <= ts, or_(Sample.ts < ts, Sample.id < sid))
    return q.order_by(Sample.ts.desc(), Sample.id.desc()).limit(scan)


def _rows_select(w: Any, probe_version_id: int | None) -> tuple[Any, Any]:
    """Columns of a browser row for the samples in subquery ``w`` (id, ts), and the label expression."""
    gt, hu = aliased(Label), aliased(Label)
    score_on = and_(Score.sample_id == w.c.id, Score.probe_version_id == (probe_version_id or -1))
    label = func.coalesce(gt.correct, hu.correct)
    q = (select(w.c.id, w.c.ts, Sample.route, Sample.status, func.substr(Sample.prompt, 1, SNIPPET),
                func.substr(Sample.answer, 1, SNIPPET), Score.p_correct, label,
                func.coalesce(gt.source, hu.source), SpotCheck.agreement)
         .select_from(w).join(Sample, Sample.id == w.c.id)
         .outerjoin(Score, score_on)
         .outerjoin(gt, and_(gt.sample_id == w.c.id, gt.source == "ground_truth"))
         .outerjoin(hu, and_(hu.sample_id == w.c.id, hu.source == "human"))
         .outerjoin(SpotCheck, SpotCheck.sample_id == w.c.id))
    return q, label


def _to_rows(found: Any) -> list[SampleRow]:
    return [SampleRow(r[0], r[1], r[2], r[3], r[4] or "", r[5] or "", r[6], None if r[7] is None else bool(r[7]),
                      r[8], r[9]) for r in found]


def rows_for_ids(session: Session, ids: list[str], probe_version_id: int | None) -> list[SampleRow]:
    """Browser rows of the given samples (an alert's evidence), newest first; unknown ids are left out."""
    w = select(Sample.id, Sample.ts).where(Sample.id.in_(ids)).subquery("w")
    q, _ = _rows_select(w, probe_version_id)
    return _to_rows(session.execute(q.order_by(w.c.ts.desc(), w.c.id.desc())).all())


def samples_page(session: Session, f: SampleFilter, page: int = PAGE_ROWS, scan: int = SCAN_ROWS) -> SamplesPage:
    w = _window(f, scan).subquery("w")
    q, label = _rows_select(w, f.probe_version_id)
    if f.route:
        q = q.where(Sample.route == f.route)
    if f.score_min is not None:
        q = q.where(Score.p_correct >= f.score_min)
    if f.score_max is not None:
        q = q.where(Score.p_correct <= f.score_max)
    if f.label == "labelled":
        q = q.where(label.is_not(None))
    elif f.label == "unlabelled":
        q = q.where(label.is_(None))
    elif f.label in ("agree", "disagree"):
        says_correct = Score.p_correct >= f.threshold
        agree = or_(and_(label.is_(True), says_correct), and_(label.is_(False), ~says_correct))
        disagree = or_(and_(label.is_(True), ~says_correct), and_(label.is_(False), says_correct))
        q = q.where(Score.p_correct.is_not(None), agree if f.label == "agree" else disagree)
    if f.spotcheck == "checked":
        q = q.where(SpotCheck.id.is_not(None))
    elif f.spotcheck == "unchecked":
        q = q.where(SpotCheck.id.is_(None))
    elif f.spotcheck == "consistent":
        q = q.where(SpotCheck.agreement >= SPOTCHECK_CORRECT_AT)
    elif f.spotcheck == "inconsistent":
        q = q.where(SpotCheck.agreement < SPOTCHECK_CORRECT_AT)
    found = session.execute(q.order_by(w.c.ts.desc(), w.c.id.desc()).limit(page + 1)).all()
    rows = _to_rows(found[:page])
    if len(found) > page:
        return SamplesPage(rows, (rows[-1].ts, rows[-1].id), threshold=f.threshold)
    # fewer matches than a page: either nothing older exists, or the scan limit stopped the search
    last = session.execute(_window(f, scan).with_only_columns(Sample.ts, Sample.id).offset(scan - 1).limit(1)).first()
    if last is None:
        return SamplesPage(rows, None, threshold=f.threshold)
    return SamplesPage(rows, (last[0], last[1]), searched_to=last[0], threshold=f.threshold)


def routes_of(session: Session, model: str) -> list[str]:
    """Routes seen for ``model`` in its newest samples (a bounded look, for the filter's choices)."""
    recent = (select(Sample.route).where(Sample.model == model).order_by(Sample.ts.desc()).limit(SCAN_ROWS)
              .subquery())
    return sorted(session.scalars(select(recent.c.route).distinct().limit(MAX_ROUTES)))


def sample_detail(session: Session, sample_id: str) -> dict[str, Any] | None:
    s = session.get(Sample, sample_id)
    if s is None:
        return None
    scores = session.execute(select(Score, ProbeVersion.version, ProbeVersion.threshold, ProbeVersion.active)
                             .join(ProbeVersion, ProbeVersion.id == Score.probe_version_id)
                             .where(Score.sample_id == sample_id).order_by(Score.id)).all()
    labels = list(session.scalars(select(Label).where(Label.sample_id == sample_id).order_by(Label.id)))
    spot = session.scalars(select(SpotCheck).where(SpotCheck.sample_id == sample_id)).first()
    image = None
    if s.image_sha256:
        row = session.execute(select(Image.sha256, Image.size, Image.format, Image.width, Image.height, Image.url,
                                     Image.purged_at, Image.data.is_not(None))
                              .where(Image.sha256 == s.image_sha256)).first()
        if row is not None:
            image = dict(zip(("sha256", "size", "format", "width", "height", "url", "purged_at", "kept"), row))
    groups = sorted(((str(k), v) for k, v in (spot.groups or {}).items()), key=lambda kv: -float(kv[1] or 0)) \
        if spot is not None else []
    return {"sample": s, "scores": scores, "labels": labels, "spot": spot, "groups": groups, "image": image}


IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
               "bmp": "image/bmp"}


def image_bytes(session: Session, sample_id: str) -> tuple[bytes, str] | None:
    """The sample's image bytes and media type while they are kept (None once purged)."""
    row = session.execute(select(Image.data, Image.format).join(Sample, Sample.image_sha256 == Image.sha256)
                          .where(Sample.id == sample_id)).first()
    if row is None or row[0] is None:
        return None
    return bytes(row[0]), IMAGE_TYPES.get((row[1] or "").lower(), "application/octet-stream")
