"""The detect job: feed new evidence to the persisted detectors, turn their state into alerts.

Per active probe version, in one transaction (detector states, alerts and outbox rows commit
together, so a crash never consumes evidence without its alert, or alerts twice):

* ``cusum_disagreement:<source>`` — windowed GLR test of the probe–evidence disagreement rate
  against the reference (:mod:`monitor.detect.labelled`; the rule kind keeps its older name);
* ``cusum_residual:<source>`` — the same bank's two-sided test of the calibration residual
  (evidence − score); both tuned together under one false-alarm budget;
* ``adwin_scores`` — ADWIN on the unlabelled probe-score stream (early warning, needs labels to confirm);
* ``adwin_spotcheck`` — ADWIN on probe/self-consistency agreement;
* ``window_drift`` — Evidently drift test of the last complete time window's scores vs the reference;
* ``metric`` — the latest rolling window's metrics of each source, for ``detector: metric`` rules
  (a rule reads the window of the ``source`` it names);
* ``no_data`` — no evidence for ``alerts.no_data_minutes``.

Label delay: each detector keeps a cursor (highest evidence id consumed) and a bounded list of
*pending* ids — evidence past the cursor whose sample is not scored yet. Every run consumes, in id
order, the pending ids that became scorable and the new ids past the cursor; a consumed id is never
consumed again. Evidence for samples from the reference period is skipped (it is the reference).

Task slices: the labelled detectors and the ``metric`` rules also run per task (``Sample.task``,
see ``collectors.tasks``) for every task the reference holds evidence of: the detector state is
keyed ``<name>@<task>`` (:func:`monitor.detect.tune.slice_name`), the slice reads only its task's
evidence and is tuned on and compared with its task's part of the reference, and its signals carry
``task``, so its alerts have their own fingerprint (``alerts.lifecycle``) and resolve on their own.
The overall detectors read every sample, as before; the label-free ones run overall only.

Corrections: a human label whose verdict changes keeps its id, so each labelled detector also keeps
a ``revision_cursor`` over ``label_revisions`` and, for every revision of a label it consumed,
retracts the old observation and adds the corrected one (:meth:`GlrBank.retract`); a flip back is
a second revision and undoes the first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from alerts.lifecycle import Signal, Transition, evaluate
from monitor.calibration.evidence import HUMAN_SOURCES, SOURCES, EvidenceRow, load_evidence
from monitor.calibration.history import parse_duration, window_start
from monitor.calibration.reference import ensure_default_reference
from monitor.calibration.revisions import load_revisions
from monitor.detect.adwin import AdwinDetector, UntrustedStateError
from monitor.detect.label_free import mean_shift_threshold, width_bucket
from monitor.detect.labelled import GlrBank
from monitor.detect.tune import LABELLED, reference_tasks, slice_name, store_tuning, tuning_for
from storage.models import (
    OVERALL_TASK, CalibrationWindow, DetectorState, DetectorTuning, Label, ProbeVersion, Reference, Sample, Score, SpotCheck, utcnow,
)

if TYPE_CHECKING:
    from monitor.config import Settings

__all__ = ["DetectResult", "run_detect", "detect_probe"]

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # evidence ids waiting for their sample's score; the oldest are dropped beyond this
MAX_BATCH = 10_000  # evidence rows consumed per detector per run (the rest next run)


@dataclass
class DetectResult:
    signals: list[Signal] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)

    @property
    def alerts_changed(self) -> int:
        return len(self.transitions)


def _state(session: Session, pv: ProbeVersion, name: str) -> DetectorState:
    st = session.scalars(select(DetectorState).filter_by(model=pv.model, probe_version_id=pv.id, detector=name)).first()
    if st is None:
        st = DetectorState(model=pv.model, probe_version_id=pv.id, detector=name, cursor=0, state={})
        session.add(st)
    return st


def _tuning(session: Session, settings: Settings, pv: ProbeVersion, ref: Reference | None,
            name: str) -> DetectorTuning | None:
    if ref is None:
        return None
    row = tuning_for(session, pv.id, ref.id, name)
    if row is not None and name.partition(":")[0] in LABELLED and "ref" not in (row.params or {}):
        row = None  # a tuning of the former CUSUMs (before the GLR bank): tune again
    if row is None:
        row = store_tuning(session, settings, pv, ref, name, np.random.default_rng(ref.id * 7919 + len(name)))
        if row is not None:
            log.info("tuned %s for %s probe %s on reference %d (no stored tuning)", name, pv.model, pv.version, ref.id)
    return row


def _waiting(session: Session, pv: ProbeVersion, source: str, ids: set[int], task: str | None = None) -> set[int]:
    """Of ``ids``, those whose evidence may still become scorable (sample or its score missing);
    ``task``: and whose sample may be of that task (not arrived yet, or of it)."""
    if not ids:
        return set()
    tbl = Label if source == "human" else SpotCheck
    scored = select(Score.id).where(Score.sample_id == tbl.sample_id, Score.probe_version_id == pv.id).exists()
    out: set[int] = set()
    ordered = sorted(ids)
    mine = (Sample.model == pv.model) & ~scored
    if task is not None:
        mine = mine & (Sample.task == task)
    for i in range(0, len(ordered), 500):  # small IN lists: large ones are slow to plan
        q = (select(tbl.id).outerjoin(Sample, Sample.id == tbl.sample_id)
             .where(tbl.id.in_(ordered[i:i + 500]), (Sample.id.is_(None)) | mine))
        out |= set(session.scalars(q))
    return out


def _new_evidence(session: Session, pv: ProbeVersion, source: str, st: DetectorState, ref: Reference,
                  task: str | None = None) -> list[EvidenceRow]:
    """Evidence to consume now, in id order; moves the cursor and the pending list in ``st.state``.

    Evidence from the reference period is consumed (its id leaves the queue) but not returned.
    ``task``: only evidence of that task's samples (a label whose sample has not arrived stays pending).
    """
    pending = set(st.state.get("pending", []))
    id_col = Label.id if source == "human" else SpotCheck.id
    q = select(id_col).where(id_col > st.cursor).order_by(id_col).limit(MAX_BATCH)
    if source == "human":
        q = q.where(Label.source.in_(HUMAN_SOURCES))
    fresh = list(session.scalars(q))
    top = max(fresh, default=st.cursor)
    candidates = pending | set(fresh)
    rows = [r for r in load_evidence(session, pv.model, pv.id, source, after_id=st.cursor, ids=sorted(pending),
                                     first_only=(source == "human"), task=task) if r.row_id <= top or r.row_id in pending]
    waiting = _waiting(session, pv, source, candidates - {r.row_id for r in rows}, task)
    dropped = max(0, len(waiting) - MAX_PENDING)  # counted here, logged once per run by run_detect
    st.cursor = top
    st.state = {**st.state, "pending": sorted(waiting)[dropped:], "pending_dropped_now": dropped,
                "pending_dropped": int(st.state.get("pending_dropped", 0)) + dropped}
    return [r for r in rows if r.ts > _reference_end(ref, source)]


def _reference_end(ref: Reference, source: str) -> datetime:
    """Evidence up to this sample time belongs to the reference of ``source`` (not monitored)."""
    last = (ref.stats.get(source) or {}).get("last_ts") if not ref.pinned else None
    return datetime.fromisoformat(last) if last else ref.window_end


def _ref_brief(ref: Reference | None) -> dict[str, Any]:
    if ref is None:
        return {}
    return {"id": ref.id, "pinned": ref.pinned, "window_start": ref.window_start.isoformat(),
            "window_end": ref.window_end.isoformat(),
            **{f"{s}_n": (ref.stats.get(s) or {}).get("n") for s in SOURCES},
            **{f"{s}_disagreement": (ref.stats.get(s) or {}).get("disagreement") for s in SOURCES}}


_CAL_KEYS = ("n", "auroc", "auroc_ci", "ece_mass", "ece_mass_ci", "ece_width", "ece_width_ci", "brier", "brier_ci",
             "r_pb", "r_pb_ci", "agreement", "agreement_ci", "accuracy", "accuracy_ci", "est_accuracy", "est_accuracy_ci")


def _newest_rolling(session: Session, pv: ProbeVersion, source: str, task: str | None) -> CalibrationWindow | None:
    return session.scalars(select(CalibrationWindow).where(
        CalibrationWindow.probe_version_id == pv.id, CalibrationWindow.kind == "rolling",
        CalibrationWindow.source == source, CalibrationWindow.task == (task or OVERALL_TASK))
        .order_by(CalibrationWindow.window_end.desc(), CalibrationWindow.id.desc())).first()


def _latest_window(session: Session, pv: ProbeVersion, source: str, task: str | None = None) -> dict[str, Any] | None:
    """Metrics (with CIs) of the newest rolling calibration window of ``source`` (of ``task``), for alert context."""
    row = _newest_rolling(session, pv, source, task)
    if row is None:
        return None
    m = row.metrics or {}
    return {"window_start": row.window_start.isoformat(), "window_end": row.window_end.isoformat(),
            "partial": row.partial, **{k: m.get(k) for k in _CAL_KEYS}}


def _observation(r: EvidenceRow, pv: ProbeVersion) -> tuple[bool, float]:
    """What the labelled detectors consume of one evidence row: (disagrees with the probe, residual)."""
    return (r.score >= pv.threshold) != r.correct, float(r.correct) - r.score


def _apply_revisions(session, pv, source, st: DetectorState, ref: Reference, det: GlrBank,
                     task: str | None = None) -> int:
    """Feed ``det`` the label revisions after its ``revision_cursor`` whose label it consumed
    (id in (consumed_after, cursor], not pending, the sample's first human label, after the
    reference) as retraction + correction; moves the revision cursor. Returns how many applied.

    Only human / ground-truth labels are revised (a spot check is never rewritten in place).
    """
    if source != "human":
        return 0
    pending = set(st.state.get("pending", []))
    after, end = int(st.state.get("consumed_after", 0)), _reference_end(ref, source)
    events = load_revisions(session, pv.model, pv.id, after_id=int(st.state.get("revision_cursor", 0)))
    applied = 0
    for ev in events:
        if ev.first_for_sample and after < ev.add.row_id <= st.cursor and ev.add.row_id not in pending \
                and ev.add.ts > end and (task is None or ev.add.task == task):
            det.retract(_observation(ev.retract, pv), _observation(ev.add, pv))
            applied += 1
    if events:
        st.state = {**st.state, "revision_cursor": events[-1].revision_id}
    return applied


def _labelled_signals(session: Session, settings: Settings, pv: ProbeVersion, ref: Reference | None,
                      source: str, task: str | None = None) -> list[Signal]:
    """The labelled detectors of ``source`` (GLR bank tests; rule kinds ``cusum_disagreement`` /
    ``cusum_residual``), fed the same way through the :class:`~monitor.detect.protocol.Detector` interface;
    ``task``: the slice of that task's samples."""
    out = []
    calibration = _latest_window(session, pv, source, task)
    for kind, test in LABELLED.items():
        name = slice_name(f"{kind}:{source}", task)
        st = _state(session, pv, name)
        tun = _tuning(session, settings, pv, ref, name)
        win = {"source": source, "kind": "sequential", **({"task": task} if task else {})}
        if ref is None or tun is None:
            out.append(Signal(kind, pv.model, pv.version, "partial", window=win, task=task,
                              summary=f"{name}: no complete reference / tuning yet"))
            continue
        state = dict(st.state or {})
        det_state = state.get("detector")
        if state.get("tuning_id") != tun.id or not isinstance(det_state, dict) or det_state.get("test") != test \
                or not GlrBank.state_is_current(det_state):
            p = tun.params  # new reference or tuning (or a detector of an older kind): restart
            det = GlrBank.from_params(p)
            state = {"pending": state.get("pending", []), "pending_dropped": state.get("pending_dropped", 0),
                     "consumed_after": st.cursor, "revision_cursor": state.get("revision_cursor", 0)}
        else:
            det = GlrBank.from_state(det_state)
        st.state = state
        revised = _apply_revisions(session, pv, source, st, ref, det, task)  # before the cursor moves past new labels
        rows = _new_evidence(session, pv, source, st, ref, task)
        recent = list(state.get("recent_disagreeing", []))
        for r in rows:
            disagree, residual = _observation(r, pv)
            det.update(disagree, residual, r.weight)  # spot checks: 1 / inclusion probability
            if disagree:  # each sample once (a relabelled sample is observed again), latest last
                recent = ([i for i in recent if i != r.sample_id] + [r.sample_id])[-20:]
        st.state = {**st.state, "detector": det.to_state(), "tuning_id": tun.id, "recent_disagreeing": recent}
        if rows:
            win.update(from_id=rows[0].row_id, to_id=rows[-1].row_id, consumed=len(rows),
                       last_ts=rows[-1].ts.isoformat())
        if revised:
            win.update(revisions_applied=revised)
        status = "partial" if not (rows or revised) else ("firing" if det.firing else "clear")
        brief = {k: v for k, v in det.to_state().items() if k not in ("checkpoints", "partial")}
        out.append(Signal(kind, pv.model, pv.version, status,  # type: ignore[arg-type]
                          metrics={**det.metrics(), "calibration_window": calibration},
                          detector_state={"name": name, **brief, "tuning_id": tun.id,
                                          "pending_dropped_now": st.state.get("pending_dropped_now", 0),
                                          "pending_dropped": st.state.get("pending_dropped", 0),
                                          "simulated_false_alarm_rate": tun.simulated_false_alarm_rate,
                                          "joint_false_alarm_rate": tun.params.get("joint_false_alarm_rate")},
                          window=win, evidence={"reference": _ref_brief(ref), "sample_ids": recent},
                          summary=det.summary(source) + (f" (task {task})" if task else ""), task=task))
    return out


def _adwin_signal(session: Session, settings: Settings, pv: ProbeVersion, ref: Reference | None, name: str) -> Signal:
    st = _state(session, pv, name)
    tun = _tuning(session, settings, pv, ref, name)
    delta = float(tun.params["delta"]) if tun is not None else float(settings.detect.adwin_delta)
    try:
        det = AdwinDetector(delta, st.state)
    except UntrustedStateError as e:  # never unpickled: restart from an empty window
        log.error("%s %s %s: %s", pv.model, pv.version, name, e)
        det = AdwinDetector(delta)
    if name == "adwin_scores":  # the unlabelled score stream, in score id order
        rows = session.execute(select(Score.id, Score.p_correct, Score.sample_id).where(
            Score.probe_version_id == pv.id, Score.id > st.cursor).order_by(Score.id).limit(MAX_BATCH)).all()
        values = [float(r[1]) for r in rows]
        ids = [r[0] for r in rows]
        sample_ids = [r[2] for r in rows]
    else:  # spot-check agreement: probe verdict == self-consistency verdict
        rows = load_evidence(session, pv.model, pv.id, "self_consistency", after_id=st.cursor)[:MAX_BATCH]
        values = [float((r.score >= pv.threshold) == r.correct) for r in rows]
        ids = [r.row_id for r in rows]
        sample_ids = [r.sample_id for r in rows]
    hits = det.update_many(values)
    if ids:
        st.cursor = max(ids)
    stats = (ref.stats or {}) if ref is not None else {}
    ref_values = (stats.get("unlabelled_scores") if name == "adwin_scores"
                  else (stats.get("self_consistency") or {}).get("agree_bits")) or []
    what = "probe score" if name == "adwin_scores" else "probe/self-consistency agreement"
    ref_mean = limit = None
    if det.n == 0 or len(ref_values) < 30:
        status = "partial"
        summary = f"ADWIN on {what}: {'no reference values yet' if det.n else 'nothing consumed yet'}"
    else:  # firing from ADWIN's detection for as long as the level differs from the reference
        ref_mean = float(np.mean(ref_values))
        limit = mean_shift_threshold(ref_values, width_bucket(det.width), target=settings.detect.target_false_alarm_rate,
                                     horizon=settings.detect.horizon)
        differs = abs(det.estimation - ref_mean) > limit
        det.shifted = det.shifted and differs
        status = "firing" if det.shifted else "clear"
        summary = (f"ADWIN: {what} mean {det.estimation:.3f} over the last {det.width} vs reference {ref_mean:.3f} "
                   f"(threshold ±{limit:.3f} for this window); "
                   + ("shifted" if det.shifted else ("differs, no change detected" if differs else "at the reference level")))
    st.state = det.to_state()
    return Signal(name, pv.model, pv.version, status,  # type: ignore[arg-type]
                  metrics={"mean_before": det.mean_before, "mean_after": det.mean_after, "window_mean": det.estimation,
                           "window_width": det.width, "consumed": len(values), "reference_mean": ref_mean,
                           "current_mean": det.estimation, "level_threshold": limit},
                  detector_state={"name": name, "delta": delta, "detections": det.detections, "n": det.n,
                                  "tuned": tun is not None, "tuning_met_target": None if tun is None else tun.params.get("met_target"),
                                  "early_warning": True, "needs_label_confirmation": True},
                  window={"kind": "stream", "from_id": ids[0] if ids else None, "to_id": ids[-1] if ids else None},
                  evidence={"reference": _ref_brief(ref), "sample_ids": list(dict.fromkeys(sample_ids[i] for i in hits))[-20:]},
                  summary=summary)


def _window_drift_signal(session: Session, settings: Settings, pv: ProbeVersion, ref: Reference | None,
                         now: datetime) -> Signal:
    name = "window_drift"
    st = _state(session, pv, name)
    width = parse_duration(settings.calibration.window)
    ws = window_start(now, width) - width  # the last complete window
    ref_scores = (ref.stats or {}).get("unlabelled_scores") if ref is not None else None
    win = {"kind": "time", "start": ws.isoformat(), "end": (ws + width).isoformat()}
    if ref_scores and len(ref_scores) < int(settings.calibration.min_labels):
        ref_scores = None  # too few reference scores to compare distributions
    if not ref_scores or st.state.get("last_window") == ws.isoformat():
        return Signal(name, pv.model, pv.version, "partial", window=win,
                      summary="window drift: no reference scores yet" if not ref_scores else "window already tested")
    cur = [float(v) for (v,) in session.execute(
        select(Score.p_correct).join(Sample, Sample.id == Score.sample_id)
        .where(Score.probe_version_id == pv.id, Sample.ts >= ws, Sample.ts < ws + width))]
    if len(cur) < int(settings.calibration.min_labels):  # tested again next run (scores may lag)
        return Signal(name, pv.model, pv.version, "partial", window={**win, "n": len(cur)},
                      summary=f"window drift: {len(cur)} scores in the window (partial)")
    from monitor.detect.window_drift import score_drift

    d = settings.detect
    res = score_drift(ref_scores, cur, method=d.drift_method, threshold=d.drift_threshold,
                      target=d.target_false_alarm_rate, horizon=d.horizon)
    st.state = {"last_window": ws.isoformat(), "result": res}
    cur_mean, ref_mean = float(np.mean(cur)), float(np.mean(ref_scores))
    how = "tuned for this window size" if res["tuned"] else "configured, untuned"
    return Signal(name, pv.model, pv.version, "firing" if res["drift"] else "clear",
                  metrics={"drift_score": res["score"], "mean_score": cur_mean, "reference_mean_score": ref_mean},
                  detector_state={"name": name, **res}, window={**win, "n": len(cur)},
                  evidence={"reference": _ref_brief(ref)},
                  summary=(f"score distribution drift: mean score {cur_mean:.3f} over {len(cur)} scores vs reference "
                           f"{ref_mean:.3f}; {res['method']} {res['score']:.3f} (threshold {res['threshold']:.3f}, {how})"))


METRIC_SOURCES = (*SOURCES, "combined")  # the rolling-window sources a ``detector: metric`` rule may name


def _metric_signal(session, pv, source: str, task: str | None = None) -> Signal:
    """The newest rolling window of ``source`` (of ``task``); ``detector: metric`` rules read the one their
    ``source`` names."""
    row = _newest_rolling(session, pv, source, task)
    of = f" (task {task})" if task else ""
    if row is None:
        return Signal("metric", pv.model, pv.version, "partial", window={"source": source}, task=task,
                      summary=f"no {source} calibration window{of} yet")
    m = dict(row.metrics or {})
    m.setdefault("ece", m.get("ece_mass"))
    m.setdefault("ece_ci", m.get("ece_mass_ci"))
    return Signal("metric", pv.model, pv.version, "partial" if row.partial else "clear", metrics=m,
                  window={"kind": row.kind, "source": row.source, "start": row.window_start.isoformat(),
                          "end": row.window_end.isoformat(), "n": row.n, "partial": row.partial},
                  evidence={"sample_ids": m.get("sample_ids_tail", [])}, task=task,
                  summary=f"rolling {source} window{of} of {row.n}: auroc {m.get('auroc')}, ece {m.get('ece')}, agreement {m.get('agreement')}")


def _no_data_signal(session: Session, settings: Settings, pv: ProbeVersion, now: datetime) -> Signal:
    minutes = float(settings.alerts.no_data_minutes)
    last_label = session.scalar(select(func.max(Label.created_at)).join(Sample, Sample.id == Label.sample_id)
                                .where(Sample.model == pv.model))
    last_sc = session.scalar(select(func.max(SpotCheck.created_at)).join(Sample, Sample.id == SpotCheck.sample_id)
                             .where(Sample.model == pv.model))
    last = max([t for t in (last_label, last_sc) if t is not None], default=None)
    since = last or pv.activated_at or pv.created_at
    silent = (now - since) > timedelta(minutes=minutes)
    return Signal("no_data", pv.model, pv.version, "firing" if silent else "clear",
                  metrics={"last_evidence_at": last.isoformat() if last else None,
                           "minutes_without_evidence": round((now - since).total_seconds() / 60, 1)},
                  detector_state={"name": "no_data", "no_data_minutes": minutes},
                  summary=f"no correctness evidence for {pv.model} since {since.isoformat()}")


def detect_probe(session: Session, settings: Settings, pv: ProbeVersion, now: datetime) -> list[Signal]:
    """Run every detector of one probe version; returns its signals (caller evaluates and commits)."""
    ref = ensure_default_reference(session, settings, pv)
    signals: list[Signal] = []
    for source in SOURCES:
        signals += _labelled_signals(session, settings, pv, ref, source)
    signals.append(_adwin_signal(session, settings, pv, ref, "adwin_scores"))
    signals.append(_adwin_signal(session, settings, pv, ref, "adwin_spotcheck"))
    signals.append(_window_drift_signal(session, settings, pv, ref, now))
    signals += [_metric_signal(session, pv, source) for source in METRIC_SOURCES]
    # the task slices: labelled detectors for the tasks the reference holds, metric rules for those with
    # windows; a slice that holds all of the overall evidence would repeat the overall one and is left out
    for source in SOURCES:
        for task in reference_tasks(ref, source):
            signals += _labelled_signals(session, settings, pv, ref, source, task)
    window_tasks = sorted(session.scalars(select(CalibrationWindow.task).where(
        CalibrationWindow.probe_version_id == pv.id, CalibrationWindow.kind == "rolling",
        CalibrationWindow.task != OVERALL_TASK).distinct()))
    for source in METRIC_SOURCES if window_tasks else ():
        overall = _newest_rolling(session, pv, source, None)
        for task in window_tasks:
            row = _newest_rolling(session, pv, source, task)
            if row is None or (overall is not None and (row.n, row.window_start) == (overall.n, overall.window_start)):
                continue  # no window of the task for this source, or it is the overall one
            signals.append(_metric_signal(session, pv, source, task))
    if float(settings.alerts.no_data_minutes) > 0:
        signals.append(_no_data_signal(session, settings, pv, now))
    return signals


def run_detect(session_factory: sessionmaker[Session], settings: Settings, now: datetime | None = None) -> DetectResult:
    """Daemon entry point: detectors + alert rules for every active probe version."""
    now = now or utcnow()
    result = DetectResult()
    with session_factory() as s:
        pv_ids = list(s.scalars(select(ProbeVersion.id).where(ProbeVersion.active.is_(True)).order_by(ProbeVersion.id)))
    for pv_id in pv_ids:
        with session_factory() as s:
            pv = s.get(ProbeVersion, pv_id)
            if pv is None:
                continue
            signals = detect_probe(s, settings, pv, now)
            result.transitions += evaluate(s, settings.alerts, signals, now)
            s.commit()
            result.signals += signals
    firing = sum(1 for sig in result.signals if sig.status == "firing")
    dropped = sum(int(sig.detector_state.get("pending_dropped_now", 0)) for sig in result.signals)
    if dropped:  # once per run, however many detectors dropped: the count is also in each detector's state
        log.warning("detect: dropped %d evidence id(s) waiting for their sample's score (pending lists hold at most "
                    "%d per detector; see pending_dropped in the detector states)", dropped, MAX_PENDING)
    # a run that changed no alert is routine (every few seconds): DEBUG; a transition is news: INFO
    log.log(logging.INFO if result.transitions else logging.DEBUG, "detect: %d signal(s), %d firing, %d alert transition(s)",
            len(result.signals), firing, len(result.transitions))
    return result
