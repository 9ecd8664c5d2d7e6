"""The calibration-history job: windowed metrics per model × probe version × source, as rows.

``run_calibrate`` (daemon job ``calibrate``) finds the evidence that arrived since its last run
(cursor kept in ``detector_states`` under the name ``calibrate``), recomputes every time window
that evidence falls into and the rolling window of the last ``calibration.rolling_n`` samples,
and upserts ``CalibrationWindow`` rows (unique by model, probe version, kind, source, start), so
re-running is idempotent and late evidence updates the windows it belongs to; so does a corrected
verdict (a label revision, ``monitor.calibration.revisions``, cursor ``revision_cursor``). Windows with fewer
than ``calibration.min_labels`` samples are stored with ``partial=True`` and never fire.

Per task: every window is computed overall (``task`` = ``""``, :data:`~storage.models.OVERALL_TASK`:
every sample, with a task or not) and again for each task whose samples it holds (``Sample.task``,
given at ingest or inferred by ``collectors.tasks``), the time windows of the task's samples in the
same interval and the rolling window of the task's last ``rolling_n``. Readers that do not ask for a
task read the overall rows.

Spot-check rows are weighted by 1 / inclusion probability (``EvidenceRow.weight``), so a
self-consistency window estimates the metric over every scored sample in it; ``combined`` mixes
the two sources with the fixed ``calibration.combined_shares`` (``evidence.combine``).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from monitor.calibration.evidence import EvidenceRow, as_arrays, combine, dedupe_human, load_evidence, weights_of
from monitor.calibration.metrics import window_metrics
from monitor.calibration.reference import active_reference, ensure_default_reference
from monitor.calibration.revisions import load_revisions
from storage.models import OVERALL_TASK, CalibrationWindow, DetectorState, LabelRevision, ProbeVersion, Score, utcnow

if TYPE_CHECKING:
    from monitor.config import CalibrationConfig, Settings

__all__ = ["parse_duration", "window_start", "run_calibrate", "calibrate_probe", "tasks_of", "CURSOR_NAME"]

log = logging.getLogger(__name__)

CURSOR_NAME = "calibrate"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '1h', '1d' -> timedelta; a clear error otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"calibration.window must look like 30m, 1h or 1d, got {text!r}")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def window_start(ts: datetime, width: timedelta) -> datetime:
    """Start of the fixed (epoch-aligned) window of ``width`` that holds ``ts``."""
    secs = width.total_seconds()
    return _EPOCH + timedelta(seconds=((ts - _EPOCH).total_seconds() // secs) * secs)


def _upsert(session: Session, key: dict[str, Any], values: dict[str, Any]) -> None:
    row = session.scalars(select(CalibrationWindow).filter_by(**key)).first()
    if row is None:
        session.add(CalibrationWindow(**key, **values))
    else:
        for k, v in values.items():
            setattr(row, k, v)


def _window_row(rows: list[EvidenceRow], weights: np.ndarray, pv: ProbeVersion, cal: CalibrationConfig,
                start: datetime, end: datetime, ref_id: int | None) -> dict[str, Any]:
    s, y = as_arrays(rows)
    seed = int(start.timestamp()) ^ pv.id  # deterministic bootstrap: re-runs give the same CIs
    m = window_metrics(s, y, threshold=pv.threshold, bins=cal.bins, bootstrap=cal.bootstrap,
                       rng=np.random.default_rng(seed & 0xFFFFFFFF), weights=weights)
    m["reference_id"] = ref_id
    m["sample_ids_tail"] = [r.sample_id for r in rows[-20:]]
    n = len(rows)
    return {
        "window_end": end, "n": n, "partial": n < cal.min_labels, "auroc": m.get("auroc"),
        "ece": m.get("ece_mass"), "brier": m.get("brier"), "agreement": m.get("agreement"),
        "mean_score": m.get("mean_score"), "metrics": m, "created_at": utcnow(),
    }


def _by_source(human: list[EvidenceRow], sc: list[EvidenceRow], cal: CalibrationConfig,
               newest: int | None = None) -> dict[str, tuple[list[EvidenceRow], np.ndarray]]:
    """Rows and weights per window source; ``newest``: only each source's last N rows (rolling)."""
    h = dedupe_human(human)[-newest:] if newest else dedupe_human(human)
    c = sorted(sc, key=lambda r: (r.ts, r.row_id))
    c = c[-newest:] if newest else c
    return {"human": (h, weights_of(h)), "self_consistency": (c, weights_of(c)),
            "combined": combine(h, c, cal.combined_shares)}


def tasks_of(*row_lists: list[EvidenceRow]) -> list[str]:
    """The tasks (sorted, no None) of the samples behind the rows: the task slices they touch."""
    return sorted({r.task for rows in row_lists for r in rows if r.task})


def _only(rows: list[EvidenceRow], task: str) -> list[EvidenceRow]:
    return [r for r in rows if r.task == task]


def _cursor(session: Session, pv: ProbeVersion) -> DetectorState:
    st = session.scalars(select(DetectorState).filter_by(model=pv.model, probe_version_id=pv.id,
                                                         detector=CURSOR_NAME)).first()
    if st is None:
        st = DetectorState(model=pv.model, probe_version_id=pv.id, detector=CURSOR_NAME, cursor=0,
                           state={"spotcheck_cursor": 0})
        session.add(st)
    return st


def calibrate_probe(session: Session, settings: Settings, pv: ProbeVersion, now: datetime) -> int:
    """Update the history rows of one probe version; returns how many rows were written."""
    width = parse_duration(settings.calibration.window)
    st = _cursor(session, pv)
    sc_cursor = int((st.state or {}).get("spotcheck_cursor", 0))
    score_cursor = int((st.state or {}).get("score_cursor", 0))
    max_score = int(session.scalar(select(func.max(Score.id)).where(Score.probe_version_id == pv.id)) or 0)
    new_h = load_evidence(session, pv.model, pv.id, "human", after_id=st.cursor)
    new_sc = load_evidence(session, pv.model, pv.id, "self_consistency", after_id=sc_cursor)
    # evidence that arrived before its sample was scored becomes visible with the score: windows of
    # newly scored samples with evidence are recomputed too, so late scores are never missed
    late = (load_evidence(session, pv.model, pv.id, "human", scored_after=score_cursor)
            + load_evidence(session, pv.model, pv.id, "self_consistency", scored_after=score_cursor))
    # corrected verdicts: recompute the windows of the revised samples
    revision_cursor = int((st.state or {}).get("revision_cursor", 0))
    revised = [ev.add for ev in load_revisions(session, pv.model, pv.id, after_id=revision_cursor)]
    max_revision = int(session.scalar(select(func.max(LabelRevision.id))) or 0)
    ensure_default_reference(session, settings, pv)
    new_state = {**(st.state or {}), "last_run": now.isoformat(), "score_cursor": max(score_cursor, max_score),
                 "revision_cursor": max(revision_cursor, max_revision)}
    if not new_h and not new_sc and not late and not revised:
        st.state = new_state
        return 0
    ref = active_reference(session, pv.id)
    ref_id = ref.id if ref is not None else None
    written = 0
    starts = sorted({window_start(r.ts, width) for r in new_h + new_sc + late + revised})
    cal = settings.calibration

    def write(kind: str, task: str, human: list[EvidenceRow], sc: list[EvidenceRow],
              bounds: tuple[datetime, datetime] | None = None, newest: int | None = None) -> int:
        done = 0
        for source, (rows, weights) in _by_source(human, sc, cal, newest=newest).items():
            if rows:
                start, end = bounds or (rows[0].ts, rows[-1].ts)
                key = dict(model=pv.model, probe_version_id=pv.id, kind=kind, source=source, task=task,
                           window_start=start)
                _upsert(session, key, _window_row(rows, weights, pv, cal, start, end, ref_id))
                done += 1
        return done

    for ws in starts:
        we = ws + width
        h = load_evidence(session, pv.model, pv.id, "human", start=ws, end=we)
        c = load_evidence(session, pv.model, pv.id, "self_consistency", start=ws, end=we)
        written += write("time", OVERALL_TASK, h, c, (ws, we))
        for task in tasks_of(h, c):  # the same interval, one task's samples
            written += write("time", task, _only(h, task), _only(c, task), (ws, we))
    n = int(cal.rolling_n)
    written += write("rolling", OVERALL_TASK, load_evidence(session, pv.model, pv.id, "human", newest=2 * n),
                     load_evidence(session, pv.model, pv.id, "self_consistency", newest=n), newest=n)
    for task in tasks_of(new_h, new_sc, late, revised):  # the rolling windows of the tasks with new evidence
        written += write("rolling", task, load_evidence(session, pv.model, pv.id, "human", newest=2 * n, task=task),
                         load_evidence(session, pv.model, pv.id, "self_consistency", newest=n, task=task), newest=n)
    st.cursor = max([st.cursor] + [r.row_id for r in new_h])
    st.state = {**new_state, "spotcheck_cursor": max([sc_cursor] + [r.row_id for r in new_sc])}
    return written


def run_calibrate(session_factory: sessionmaker[Session], settings: Settings, now: datetime | None = None) -> int:
    """Daemon entry point: update calibration history for every probe version with scores."""
    now = now or utcnow()
    with session_factory() as s:
        pv_ids = [i for (i,) in s.execute(select(Score.probe_version_id).distinct())]
    total = 0
    for pv_id in pv_ids:
        with session_factory() as s:
            pv = s.get(ProbeVersion, pv_id)
            if pv is None:
                continue
            total += calibrate_probe(s, settings, pv, now)
            s.commit()
    log.log(logging.INFO if total else logging.DEBUG,
            "calibration history: %d window row(s) written for %d probe version(s)", total, len(pv_ids))
    return total
