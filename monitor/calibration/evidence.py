"""Correctness evidence joined to probe scores: the rows every calibration metric and detector reads.

Two evidence sources, each with its own id space (the detectors' cursors):

* ``human``: labels with source ``human`` or ``ground_truth`` (``Label.id``). When a sample has
  several, windows prefer ground truth and detectors take the first to arrive (lowest id), so a
  sample is never counted twice.
* ``self_consistency``: spot checks (``SpotCheck.id``); correct by
  :func:`monitor.spotcheck.answers.spotcheck_correct` (the served answer's group holds at least
  half of the K sampled answers, ``agreement >= 0.5``: the one definition the job uses too).

Every row carries its inclusion probability (``SpotCheck.inclusion_prob`` for spot checks, 1 for
labels) and ``weight`` = 1 / inclusion probability. The selection policy oversamples scores near
the decision boundary, so any estimate from spot checks (window metrics, detector input) must
weight each row by ``weight`` (Horvitz-Thompson / Hajek) to describe all scored samples.

``combined`` (:func:`combine`) is a mixture with fixed shares (``calibration.combined_shares``,
default half and half): each source's rows are weighted so the source holds its configured share
of the total weight, whatever the spot-check budget or the label backlog, so a combined metric
moves only when a source's metric moves. Note that the sources answer different questions
(human: the answer is right; self_consistency: the model agrees with itself).
A row needs a score by the probe version in question; evidence whose sample is not scored yet
simply does not appear until it is (the detectors keep such ids pending, see ``monitor.detect``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session, aliased

from monitor.spotcheck.answers import spotcheck_correct
from storage.models import Label, Sample, Score, SpotCheck

__all__ = [
    "HUMAN_SOURCES",
    "SOURCES",
    "EvidenceRow",
    "load_evidence",
    "combine",
    "as_arrays",
    "weights_of",
]

HUMAN_SOURCES = ("human", "ground_truth")
SOURCES = ("human", "self_consistency")  # evidence sources with their own detectors and reference
_IN_CHUNK = 500  # ids per IN list


@dataclass(frozen=True)
class EvidenceRow:
    row_id: int  # Label.id (human) or SpotCheck.id (self_consistency)
    sample_id: str
    ts: datetime  # when the request happened (sample time)
    score: float  # probe p_correct
    correct: bool
    source: str  # human | self_consistency
    label_source: str  # human | ground_truth | self_consistency
    inclusion_prob: float = 1.0  # probability the row was selected (spot checks); 1 for labels
    task: str | None = None  # the sample's task (Sample.task); None: no task

    @property
    def weight(self) -> float:
        """1 / inclusion probability: how many scored samples this row stands for."""
        return 1.0 / self.inclusion_prob


# ``probe_version_id + 0``: keeps SQLite from driving the join from the scores index (a scan of
# every score of the probe) when the filter is on evidence ids; the (sample_id, probe) index still serves.


def _human_query(probe_version_id: int, model: str, first_only: bool):
    q = (
        select(Label.id, Label.sample_id, Sample.ts, Score.p_correct, Label.correct, Label.source, Sample.task)
        .join(Sample, Sample.id == Label.sample_id)
        .join(Score, and_(Score.sample_id == Label.sample_id, Score.probe_version_id + 0 == probe_version_id))
        .where(Label.source.in_(HUMAN_SOURCES), Sample.model == model)
    )
    if first_only:
        earlier = aliased(Label)
        q = q.where(~exists().where(earlier.sample_id == Label.sample_id, earlier.source.in_(HUMAN_SOURCES),
                                    earlier.id < Label.id))
    return q, Label.id


def _sc_query(probe_version_id: int, model: str):
    q = (
        select(SpotCheck.id, SpotCheck.sample_id, Sample.ts, Score.p_correct, SpotCheck.agreement,
               SpotCheck.inclusion_prob, Sample.task)
        .join(Sample, Sample.id == SpotCheck.sample_id)
        .join(Score, and_(Score.sample_id == SpotCheck.sample_id, Score.probe_version_id + 0 == probe_version_id))
        .where(Sample.model == model)
    )
    return q, SpotCheck.id


def load_evidence(
    session: Session,
    model: str,
    probe_version_id: int,
    source: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    after_id: int | None = None,
    ids: Sequence[int] | None = None,
    first_only: bool = False,
    newest: int | None = None,
    oldest: int | None = None,
    scored_after: int | None = None,
    task: str | None = None,
) -> list[EvidenceRow]:
    """Evidence rows of one source for ``model`` scored by ``probe_version_id``.

    Filters: sample time in [start, end); row id > ``after_id`` or in ``ids`` (either matches when
    both are given); ``scored_after``: only rows whose score id is greater; ``newest``/``oldest`` = only the last/first N by sample time. Rows come in id
    order unless ``newest``/``oldest`` is given (then by sample time). ``task``: only samples of that
    task (None: every sample, the overall view).
    """
    if source == "human":
        q, id_col = _human_query(probe_version_id, model, first_only)
    elif source == "self_consistency":
        q, id_col = _sc_query(probe_version_id, model)
    else:
        raise ValueError(f"unknown evidence source {source!r}; expected one of {SOURCES}")
    if scored_after is not None:
        q = q.where(Score.id > scored_after)
    if task is not None:
        q = q.where(Sample.task == task)
    if start is not None:
        q = q.where(Sample.ts >= start)
    if end is not None:
        q = q.where(Sample.ts < end)
    if ids:
        if newest is not None or oldest is not None:
            raise ValueError("ids cannot be combined with newest/oldest")
        # large IN lists are slow to compile and plan: query in chunks, plus the id range if any
        parts = [q.where(id_col > after_id)] if after_id is not None else []
        parts += [q.where(id_col.in_(chunk)) for chunk in _chunks(sorted(set(ids)), _IN_CHUNK)]
        seen: dict[int, EvidenceRow] = {}
        for part in parts:
            for row in _rows(session, part.order_by(id_col), source):
                seen[row.row_id] = row
        return [seen[k] for k in sorted(seen)]
    if after_id is not None:
        q = q.where(id_col > after_id)
    if newest is not None:
        q = q.order_by(Sample.ts.desc(), id_col.desc()).limit(newest)
    elif oldest is not None:
        q = q.order_by(Sample.ts, id_col).limit(oldest)
    else:
        q = q.order_by(id_col)
    rows = _rows(session, q, source)
    if newest is not None:
        rows.reverse()
    return rows


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _rows(session: Session, q: Any, source: str) -> list[EvidenceRow]:
    rows: list[EvidenceRow] = []
    for r in session.execute(q):
        if source == "human":
            rows.append(EvidenceRow(r[0], r[1], r[2], float(r[3]), bool(r[4]), "human", r[5], task=r[6]))
        else:
            rows.append(EvidenceRow(r[0], r[1], r[2], float(r[3]), spotcheck_correct(r[4]),
                                    "self_consistency", "self_consistency", _inclusion(r[0], r[5]), task=r[6]))
    return rows


def _inclusion(row_id: int, p: Any) -> float:
    p = float(p)
    if not 0.0 < p <= 1.0:  # a stored probability outside (0, 1] would make the weight meaningless
        raise ValueError(f"spot check {row_id} has inclusion_prob {p}; it must be in (0, 1]")
    return p


def dedupe_human(rows: Iterable[EvidenceRow]) -> list[EvidenceRow]:
    """One human row per sample: ground truth over human, then the first to arrive."""
    best: dict[str, EvidenceRow] = {}
    for r in rows:
        cur = best.get(r.sample_id)
        key = (r.label_source != "ground_truth", r.row_id)
        if cur is None or key < (cur.label_source != "ground_truth", cur.row_id):
            best[r.sample_id] = r
    return sorted(best.values(), key=lambda r: (r.ts, r.row_id))


def combine(
    human: Iterable[EvidenceRow], sc: Iterable[EvidenceRow], shares: Mapping[str, float]
) -> tuple[list[EvidenceRow], np.ndarray]:
    """The combined view: (rows, weights) with each source's weights (1 / inclusion probability)
    scaled to sum to its share of ``shares``; a source with no rows passes its share to the others,
    a source with share 0 is left out. Rows in sample-time order."""
    by_source = {"human": dedupe_human(human), "self_consistency": list(sc)}
    present = {src: rows for src, rows in by_source.items() if rows and shares.get(src, 0.0) > 0}
    total_share = sum(shares[src] for src in present)
    rows: list[EvidenceRow] = []
    weights: list[float] = []
    for src, part in present.items():
        w = weights_of(part)
        rows += part
        weights += list(w * (shares[src] / total_share) / w.sum())
    order = sorted(range(len(rows)), key=lambda i: (rows[i].ts, rows[i].source, rows[i].row_id))
    return [rows[i] for i in order], np.array([weights[i] for i in order], dtype=np.float64)


def as_arrays(rows: Sequence[EvidenceRow]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, correct) arrays of ``rows``."""
    return (np.fromiter((r.score for r in rows), dtype=np.float64, count=len(rows)),
            np.fromiter((r.correct for r in rows), dtype=np.float64, count=len(rows)))


def weights_of(rows: Sequence[EvidenceRow]) -> np.ndarray:
    """Each row's weight (1 / inclusion probability), aligned with :func:`as_arrays`."""
    return np.fromiter((r.weight for r in rows), dtype=np.float64, count=len(rows))
