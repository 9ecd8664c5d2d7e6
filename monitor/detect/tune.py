"""``vlmwatch detect tune``: tune every detector of a probe version on its reference, store the result.

One ``DetectorTuning`` row per detector and reference. The runner uses the newest row whose
``reference_id`` is the active reference; when there is none it tunes on the spot (the same code).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from monitor.calibration.evidence import SOURCES
from monitor.calibration.reference import active_reference, ensure_default_reference
from monitor.detect.tuning import tune_adwin, tune_bernoulli_cusum, tune_residual_cusum
from storage.models import DetectorTuning, ProbeVersion, Reference

__all__ = ["DETECTORS", "tune_detectors", "tune_detector", "tuning_for"]

log = logging.getLogger(__name__)

DETECTORS = tuple(
    [f"cusum_disagreement:{s}" for s in SOURCES] + [f"cusum_residual:{s}" for s in SOURCES]
    + ["adwin_scores", "adwin_spotcheck"]
)


def _complete(ref: Reference, source: str, min_n: int) -> dict[str, Any] | None:
    st = (ref.stats or {}).get(source)
    if not isinstance(st, dict) or not st.get("complete") or int(st.get("n", 0)) < min_n:
        return None
    return st


def tune_detector(ref: Reference, detector: str, settings: Any, rng: np.random.Generator) -> tuple[dict[str, Any], float] | None:
    """Tune one detector on ``ref``; None when the reference lacks what it needs."""
    d = settings.detect
    min_n = int(settings.calibration.min_labels)
    common = dict(target=d.target_false_alarm_rate, horizon=d.horizon, rng=rng)
    kind, _, source = detector.partition(":")
    if kind == "cusum_disagreement":
        st = _complete(ref, source, min_n)
        if st is None:
            return None
        t = tune_bernoulli_cusum(int(st["disagreements"]), int(st["n"]), shift=d.cusum_shift,
                                 simulations=d.simulations, **common)
        return t.params(), t.simulated_false_alarm_rate
    if kind == "cusum_residual":
        st = _complete(ref, source, min_n)
        if st is None or len(st.get("residuals", [])) < 30:
            return None
        t = tune_residual_cusum(st["residuals"], shift_sd=d.residual_shift_sd, simulations=d.simulations, **common)
        return t.params(), t.simulated_false_alarm_rate
    if kind == "adwin_scores":
        values = (ref.stats or {}).get("unlabelled_scores") or []
        if len(values) < max(30, min_n):
            return None
        a = tune_adwin(values, start_delta=d.adwin_delta, simulations=d.adwin_simulations, **common)
        return a.params(), a.simulated_false_alarm_rate
    if kind == "adwin_spotcheck":
        st = _complete(ref, "self_consistency", min_n)
        if st is None or len(st.get("agree_bits", [])) < 30:
            return None
        a = tune_adwin(st["agree_bits"], start_delta=d.adwin_delta, simulations=d.adwin_simulations, **common)
        return a.params(), a.simulated_false_alarm_rate
    raise ValueError(f"unknown detector {detector!r}; known: {DETECTORS}")


def tuning_for(session: Session, pv_id: int, ref_id: int, detector: str) -> DetectorTuning | None:
    return session.scalars(
        select(DetectorTuning).where(DetectorTuning.probe_version_id == pv_id, DetectorTuning.reference_id == ref_id,
                                     DetectorTuning.detector == detector).order_by(DetectorTuning.id.desc())
    ).first()


def store_tuning(session: Session, settings: Any, pv: ProbeVersion, ref: Reference, detector: str,
                 rng: np.random.Generator) -> DetectorTuning | None:
    res = tune_detector(ref, detector, settings, rng)
    if res is None:
        return None
    params, far = res
    row = DetectorTuning(model=pv.model, probe_version_id=pv.id, reference_id=ref.id, detector=detector,
                         params={**params, "target_false_alarm_rate": settings.detect.target_false_alarm_rate},
                         simulated_false_alarm_rate=far)
    session.add(row)
    session.flush()
    return row


def tune_detectors(session_factory: sessionmaker[Session], settings: Any, model: str | None = None,
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
            for det in DETECTORS:
                row = store_tuning(s, settings, pv, ref, det, rng)
                if row is None:
                    log.info("%s %s: reference has too little evidence for %s", pv.model, pv.version, det)
                else:
                    out.append(row)
        s.commit()
    return out
