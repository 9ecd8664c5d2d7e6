"""``vlmwatch detect tune``: tune every detector of a probe version on its reference, store the result.

One ``DetectorTuning`` row per detector and reference. The runner uses the newest row whose
``reference_id`` is the active reference; when there is none it tunes on the spot (the same code).
The two labelled detectors of a source (``cusum_disagreement:<source>``, ``cusum_residual:<source>``,
names kept for the alert rules; both are tests of the GLR bank in :mod:`monitor.detect.labelled`)
share one false-alarm budget, so they are tuned together and stored as a pair.

Task slices: the labelled detectors also run per task (``Sample.task``), named
``<detector>@<task>`` (:func:`slice_name`) and tuned on the reference's part of that task
(``Reference.stats["tasks"][task]``); they need ``calibration.min_labels`` of the task's evidence in
the reference.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from monitor.calibration.evidence import SOURCES
from monitor.calibration.reference import active_reference, ensure_default_reference
from monitor.detect.labelled import tune_labelled
from monitor.detect.tuning import tune_adwin
from storage.models import DetectorTuning, ProbeVersion, Reference

if TYPE_CHECKING:
    from monitor.config import Settings

__all__ = ["DETECTORS", "tune_detectors", "tune_detector", "tuning_for", "slice_name", "split_slice", "reference_tasks"]

log = logging.getLogger(__name__)

DETECTORS = tuple(
    [f"cusum_disagreement:{s}" for s in SOURCES] + [f"cusum_residual:{s}" for s in SOURCES]
    + ["adwin_scores", "adwin_spotcheck"]
)
LABELLED = {"cusum_disagreement": "disagreement", "cusum_residual": "residual"}  # rule kind -> GLR bank test


def slice_name(detector: str, task: str | None) -> str:
    """The detector name of a task slice (``cusum_disagreement:human@describe``); ``detector`` itself overall."""
    return f"{detector}@{task}" if task else detector


def split_slice(name: str) -> tuple[str, str | None]:
    """(detector, task or None) of a detector name made by :func:`slice_name`."""
    base, _, task = name.partition("@")
    return base, task or None


def reference_tasks(ref: Reference | None, source: str | None = None) -> list[str]:
    """The tasks the reference holds evidence of (the task slices that can be tuned); with ``source``,
    those whose part of that source's reference is not all of it (a task that is all of it would
    only repeat the overall detector, and its alerts)."""
    tasks = ((ref.stats or {}).get("tasks") or {}) if ref is not None else {}
    if source is None:
        return sorted(tasks)
    total = int(((ref.stats or {}).get(source) or {}).get("n", 0)) if ref is not None else 0
    return sorted(t for t, v in tasks.items() if source in v and int(v[source].get("n", 0)) < total)


def _complete(ref: Reference, source: str, min_n: int, task: str | None = None) -> dict[str, Any] | None:
    stats = (ref.stats or {}) if task is None else ((ref.stats or {}).get("tasks") or {}).get(task) or {}
    st = stats.get(source)
    if not isinstance(st, dict) or not st.get("complete") or int(st.get("n", 0)) < min_n:
        return None
    return st


def _pairs(st: dict[str, Any]) -> tuple[list[float], list[bool], list[float]]:
    """The reference's kept (score, evidence, weight) triples: evidence = score + residual (0 or 1);
    weight 1 / inclusion probability (1 for labels, and for references stored before weights)."""
    scores = [float(v) for v in st.get("scores", [])]
    correct = [round(p + r) >= 1 for p, r in zip(scores, st.get("residuals", []))]
    weights = [float(w) for w in st.get("weights", [])]
    if len(weights) != len(correct):
        weights = [1.0] * len(correct)
    return scores[:len(correct)], correct, weights


def tune_detector(ref: Reference, detector: str, settings: Settings, rng: np.random.Generator,
                  threshold: float = 0.5) -> dict[str, tuple[dict[str, Any], float]] | None:
    """Tune ``detector`` on ``ref``: {detector name: (params, simulated false-alarm rate)}, one entry,
    or both labelled detectors of the source; None when the reference lacks what it needs."""
    d = settings.detect
    min_n = int(settings.calibration.min_labels)
    common = dict(target=d.target_false_alarm_rate, horizon=d.horizon, rng=rng)
    base, task = split_slice(detector)
    kind, _, source = base.partition(":")
    if kind in LABELLED:
        st = _complete(ref, source, min_n, task)
        if st is None:
            return None
        scores, correct, weights = _pairs(st)
        if len(scores) < 30:
            return None
        t = tune_labelled(scores, correct, threshold=threshold, simulations=d.simulations, weights=weights, **common)
        return {slice_name(f"{k}:{source}", task): (t.params(test), t.simulated_false_alarm_rate)
                for k, test in LABELLED.items()}
    if task is not None:
        raise ValueError(f"{detector!r}: only the labelled detectors ({', '.join(LABELLED)}) run per task")
    if kind == "adwin_scores":
        values = (ref.stats or {}).get("unlabelled_scores") or []
        if len(values) < max(30, min_n):
            return None
        a = tune_adwin(values, start_delta=d.adwin_delta, simulations=d.adwin_simulations, **common)
        return {detector: (a.params(), a.simulated_false_alarm_rate)}
    if kind == "adwin_spotcheck":
        st = _complete(ref, "self_consistency", min_n)
        if st is None or len(st.get("agree_bits", [])) < 30:
            return None
        a = tune_adwin(st["agree_bits"], start_delta=d.adwin_delta, simulations=d.adwin_simulations, **common)
        return {detector: (a.params(), a.simulated_false_alarm_rate)}
    raise ValueError(f"unknown detector {detector!r}; known: {DETECTORS}")


def tuning_for(session: Session, pv_id: int, ref_id: int, detector: str) -> DetectorTuning | None:
    return session.scalars(
        select(DetectorTuning).where(DetectorTuning.probe_version_id == pv_id, DetectorTuning.reference_id == ref_id,
                                     DetectorTuning.detector == detector).order_by(DetectorTuning.id.desc())
    ).first()


def store_tuning(session: Session, settings: Settings, pv: ProbeVersion, ref: Reference, detector: str,
                 rng: np.random.Generator) -> DetectorTuning | None:
    """Tune and store ``detector`` (and its labelled pair); returns the row of ``detector``."""
    res = tune_detector(ref, detector, settings, rng, threshold=float(pv.threshold))
    if res is None:
        return None
    rows = {}
    for name, (params, far) in res.items():
        rows[name] = DetectorTuning(model=pv.model, probe_version_id=pv.id, reference_id=ref.id, detector=name,
                                    params={**params, "target_false_alarm_rate": settings.detect.target_false_alarm_rate},
                                    simulated_false_alarm_rate=far)
        session.add(rows[name])
    session.flush()
    return rows[detector]


def tune_detectors(session_factory: sessionmaker[Session], settings: Settings, model: str | None = None,
                   seed: int | None = None) -> list[DetectorTuning]:
    """Tune all detectors of every active probe version (of ``model``) on its active reference."""
    rng = np.random.default_rng(seed)
    out: list[DetectorTuning] = []
    with session_factory() as s:
        q = select(ProbeVersion).where(ProbeVersion.active.is_(True))
        if model:
            q = q.where(ProbeVersion.model == model)
        pvs = list(s.scalars(q))
        if not pvs:
            raise ValueError(f"no active probe version{' for model ' + repr(model) if model else ''}")
        for pv in pvs:
            ref = active_reference(s, pv.id) or ensure_default_reference(s, settings, pv)
            if ref is None:
                log.warning("no reference for %s probe %s yet: nothing to tune", pv.model, pv.version)
                continue
            sliced = [slice_name(f"cusum_disagreement:{s}", t) for s in SOURCES for t in reference_tasks(ref, s)]
            for det in (*DETECTORS, *sliced):
                if any(r.detector == det and r.probe_version_id == pv.id for r in out):
                    continue  # tuned with its labelled pair
                row = store_tuning(s, settings, pv, ref, det, rng)
                if row is None:
                    log.info("%s %s: reference has too little evidence for %s", pv.model, pv.version, det)
                else:
                    base, task = split_slice(det)
                    kind, _, source = base.partition(":")
                    pair = [tuning_for(s, pv.id, ref.id, slice_name(f"{k}:{source}", task))
                            for k in LABELLED if k != kind and kind in LABELLED]
                    out += [row, *[r for r in pair if r is not None]]
        s.commit()
    return out
