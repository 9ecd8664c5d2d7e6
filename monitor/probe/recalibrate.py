"""``vlmwatch probe recalibrate``: refit the active probe's calibration on the freshest labels.

When the probe still ranks answers well but its probabilities drifted (``probe_calibration_drift``),
retraining is not needed: a new calibration map on a few hundred fresh labels is. This module

1. takes the freshest human / ground-truth labels of samples the active probe version scored
   (``recalibration.max_labels``, optionally only since a time), refusing too few of them;
2. recovers the probe's logit from each stored score (the head's output is a sigmoid, so the
   logit is exact up to float32 saturation; no model pass and no stored image is needed) and
   chooses Platt, temperature or isotonic scaling on held-out folds
   (:mod:`monitor.probe.calibrator_choice`);
3. reports before/after ECE (equal-mass and equal-width), Brier and AUROC with 95% CIs, on held-out
   predictions, and whether ranking held (:func:`monitor.calibration.advice.recalibration_advice`,
   against the probe's reference AUROC): when it broke, the advice is to retrain and nothing is
   written unless forced;
4. writes the new version as a probe artifact folder like ``probe train`` does (same layer, pooling
   and linear head direction; the new map folded in), with metadata naming the version it
   recalibrates and the labels it used, registers it, and activates it only when asked.

The new version has its own probe-version id, so its detectors, tunings and default reference start
afresh (``monitor.calibration.reference``: the first ``calibration.reference_n`` labelled samples it
scores after its activation); the daemon's score job picks the new active version up within
``ScoreJob.probe_check_seconds``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.calibration.advice import recalibration_advice
from monitor.calibration.evidence import HUMAN_SOURCES, EvidenceRow, as_arrays, dedupe_human, load_evidence
from monitor.calibration.metrics import window_metrics
from monitor.calibration.reference import active_reference
from monitor.config import Settings
from monitor.probe.artifact import ProbeArtifact, load_artifact, save_artifact
from monitor.probe.calibrator_choice import MIN_PER_CLASS, choose_calibrator
from monitor.probe.calibrators import CalibrationFitError, Calibrator, fit_calibrator, logit
from monitor.probe.registry import active_probe, register_probe
from storage.models import ProbeVersion, Reference

__all__ = ["RecalibrationError", "RecalibrationRequest", "RecalibrationResult", "fresh_labels", "recalibrate_probe"]

log = logging.getLogger(__name__)

_METRIC_KEYS = ("n", "n_pos", "accuracy", "mean_score", "ece_mass", "ece_mass_ci", "ece_width", "ece_width_ci",
                "auroc", "auroc_ci", "brier", "brier_ci")


class RecalibrationError(ValueError):
    """A recalibration refused; ``code`` says why (``unknown_model``, ``no_active_probe``,
    ``too_few_labels``, ``artifact_missing``, ``not_fittable``, ``bad_request``)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": str(self), **self.details}


@dataclass(frozen=True)
class RecalibrationRequest:
    model: str  # served model name
    since: datetime | None = None  # only labels of samples from this time on
    max_labels: int | None = None  # default: recalibration.max_labels
    method: str = "auto"  # auto | platt | temperature | isotonic
    activate: bool = False
    force: bool = False  # write the new version even when the advice is to retrain
    out: Path | None = None  # artifact folder; default: recalibration.probe_dir or beside the active one
    seed: int = 0  # folds of the held-out choice


@dataclass(frozen=True)
class RecalibrationResult:
    status: str  # activated | registered | retrain (nothing written)
    report: dict[str, Any]  # JSON-ready: labels, selection, before/after, reference, advice, new_probe
    artifact: ProbeArtifact | None = None


def fresh_labels(session: Session, pv: ProbeVersion, *, since: datetime | None, max_labels: int) -> list[EvidenceRow]:
    """The newest ``max_labels`` human / ground-truth labelled samples scored by ``pv``, oldest first.

    One label per sample (ground truth preferred over human, as the calibration windows do).
    """
    # at most one label per sample and source: this many rows always hold max_labels samples
    rows = load_evidence(session, pv.model, pv.id, "human", start=since, newest=max_labels * len(HUMAN_SOURCES))
    return dedupe_human(rows)[-max_labels:]


def _metrics(p: np.ndarray, y: np.ndarray, threshold: float, settings: Settings) -> dict[str, Any]:
    cal = settings.calibration
    m = window_metrics(p, y, threshold=threshold, bins=cal.bins, bootstrap=cal.bootstrap)
    return {k: m.get(k) for k in _METRIC_KEYS}


def _reference_metrics(session: Session, pv: ProbeVersion) -> tuple[dict[str, Any] | None, str]:
    """The probe's reference AUROC: its active reference's labelled metrics, else its held-out
    training metrics (the ``calib`` split of ``probe train``)."""
    ref: Reference | None = active_reference(session, pv.id)
    human = ((ref.stats or {}).get("human") or {}) if ref is not None else {}
    if ref is not None and (human.get("metrics") or {}).get("auroc") is not None:
        kind = "pinned" if ref.pinned else "default"
        return human["metrics"], f"{kind} reference {ref.id} (human labels, n={human.get('n')})"
    calib = (pv.metrics or {}).get("calib")
    if calib and calib.get("auroc") is not None:
        return calib, f"held-out split of the probe's training (n={calib.get('n')})"
    return None, "none"


def _check_model(session: Session, settings: Settings, model: str) -> ProbeVersion:
    versions = list(session.scalars(select(ProbeVersion).where(ProbeVersion.model == model)))
    if model not in settings.models and not versions:
        known = sorted(set(settings.models) | set(session.scalars(select(ProbeVersion.model).distinct())))
        raise RecalibrationError("unknown_model", f"model {model!r} is unknown: not in the config's models and no "
                                 f"probe registered for it (known: {', '.join(known) or 'none'})")
    pv = active_probe(session, model)
    if pv is None:
        have = ", ".join(sorted(v.version for v in versions)) or "none"
        raise RecalibrationError("no_active_probe", f"model {model!r} has no active probe to recalibrate (registered: "
                                 f"{have}); activate one with `vlmwatch probe activate` or train one with "
                                 f"`vlmwatch probe train ... --register --served-name {model}`")
    return pv


def _check_labels(rows: list[EvidenceRow], pv: ProbeVersion, request: RecalibrationRequest, need: int) -> None:
    n = len(rows)
    n_ok = sum(r.correct for r in rows)
    if n >= need and min(n_ok, n - n_ok) >= MIN_PER_CLASS:
        return
    since = f" since {request.since.isoformat()}" if request.since else ""
    raise RecalibrationError(
        "too_few_labels",
        f"model {pv.model!r} probe {pv.version} has {n} labelled scored samples{since} ({n_ok} correct, "
        f"{n - n_ok} incorrect); recalibration needs at least {need} (recalibration.min_labels), with at least "
        f"{MIN_PER_CLASS} correct and {MIN_PER_CLASS} incorrect",
        have=n, have_correct=n_ok, needed=need, needed_per_class=MIN_PER_CLASS)


def _labels_block(rows: list[EvidenceRow], since: datetime | None) -> dict[str, Any]:
    sources: dict[str, int] = {}
    for r in rows:
        sources[r.label_source] = sources.get(r.label_source, 0) + 1
    digest = hashlib.sha256(json.dumps([[r.row_id, r.sample_id, r.correct] for r in rows]).encode()).hexdigest()
    return {"n": len(rows), "n_correct": sum(r.correct for r in rows), "since": since.isoformat() if since else None,
            "first_ts": rows[0].ts.isoformat(), "last_ts": rows[-1].ts.isoformat(), "sources": sources,
            "sha256": digest}


def _out_dir(settings: Settings, request: RecalibrationRequest, pv: ProbeVersion, version: str) -> Path:
    if request.out is not None:
        out = Path(request.out)
    elif settings.recalibration.probe_dir:
        out = Path(settings.recalibration.probe_dir) / version
    else:
        out = Path(pv.path).parent / version
    if out.exists() and any(out.iterdir()):
        raise RecalibrationError("bad_request", f"{out} exists and is not empty: give a new folder")
    return out


def recalibrate_probe(session: Session, settings: Settings, request: RecalibrationRequest) -> RecalibrationResult:
    """Recalibrate ``request.model``'s active probe (see the module docstring); the caller commits.

    Raises :class:`RecalibrationError` for a refusal; a retrain advice is a result (``status``
    ``retrain``, nothing written) unless ``request.force``.
    """
    cfg = settings.recalibration
    max_labels = int(request.max_labels or cfg.max_labels)
    if max_labels < cfg.min_labels:
        raise RecalibrationError("bad_request", f"max_labels {max_labels} is below recalibration.min_labels="
                                 f"{cfg.min_labels}: no recalibration could ever run")
    pv = _check_model(session, settings, request.model)
    try:
        artifact = load_artifact(pv.path)
    except (FileNotFoundError, ValueError) as e:
        raise RecalibrationError("artifact_missing", f"probe {pv.version} of {pv.model!r}: {e}") from None
    rows = fresh_labels(session, pv, since=request.since, max_labels=max_labels)
    _check_labels(rows, pv, request, int(cfg.min_labels))
    s, y = as_arrays(rows)
    z = logit(s)
    try:
        choice = choose_calibrator(z, y, request.method, seed=request.seed)
    except CalibrationFitError as e:
        raise RecalibrationError("not_fittable", f"probe {pv.version}: {e}; retrain the probe") from None
    except ValueError as e:
        raise RecalibrationError("bad_request", str(e)) from None
    before = _metrics(s, y, pv.threshold, settings)
    after = _metrics(choice.held_out, y, pv.threshold, settings)
    ref_metrics, ref_what = _reference_metrics(session, pv)
    advice = recalibration_advice(ref_metrics, before, max_auroc_drop=float(cfg.max_auroc_drop), model=pv.model)
    report: dict[str, Any] = {
        "model": pv.model,
        "probe": {"version": pv.version, "id": pv.id, "path": pv.path, "calibration": artifact.meta.calibration},
        "labels": _labels_block(rows, request.since),
        "selection": {"method": choice.method, "reason": choice.reason, "folds": choice.folds,
                      "criterion": "held-out log-loss", "candidates": [c.as_dict() for c in choice.candidates]},
        # before: the probe's own scores (it never saw these labels); after: out-of-fold predictions
        "before": before,
        "after": after,
        "held_out": f"{choice.folds}-fold cross-validation: each label predicted by a map fitted without it",
        "reference": {"what": ref_what, "auroc": (ref_metrics or {}).get("auroc"),
                      "auroc_ci": (ref_metrics or {}).get("auroc_ci")},
        "advice": advice.as_dict(),
        "new_probe": None,
    }
    if advice.action == "retrain" and not request.force:
        log.warning("recalibration of %s probe %s refused: %s", pv.model, pv.version, advice.text)
        return RecalibrationResult("retrain", report)
    final = fit_calibrator(choice.method, z, y)  # the shipped map: all the labels
    art = _write_version(settings, request, pv, artifact, final, rows, report)
    pinned = settings.models.get(pv.model) is not None and settings.models[pv.model].probe
    activate = request.activate and not pinned
    row = register_probe(session, pv.model, art, activate=activate)
    report["new_probe"] = {"version": art.meta.version, "id": row.id, "path": str(art.path), "active": activate}
    if request.activate and pinned:
        report["note"] = (f"not activated: the config pins models.{pv.model}.probe = {pinned}; point it at "
                          f"{art.path} (or remove it) to use the recalibrated version")
    log.info("recalibrated %s probe %s -> %s (%s; ECE %.3f -> %.3f held-out)%s", pv.model, pv.version,
             art.meta.version, choice.method, before["ece_mass"], after["ece_mass"], ", activated" if activate else "")
    return RecalibrationResult("activated" if activate else "registered", report, art)


def _write_version(settings: Settings, request: RecalibrationRequest, pv: ProbeVersion, artifact: ProbeArtifact,
                   final: Calibrator, rows: list[EvidenceRow], report: dict[str, Any]) -> ProbeArtifact:
    old = artifact.meta
    head = final.fold(artifact.head)
    created = datetime.now(timezone.utc)
    labels = report["labels"]
    digest = hashlib.sha256(head.weight.tobytes() + head.iso_y.tobytes() + old.version.encode()
                            + labels["sha256"].encode()).hexdigest()
    version = f"{created:%Y%m%dT%H%M%SZ}-l{old.layer}-{old.pooling}-recal-{digest[:8]}"
    lineage = old.extra.get("recalibration", {})
    recal = {
        "recalibrates": {"version": old.version, "probe_version_id": pv.id, "path": pv.path,
                         "calibration": old.calibration},
        # the trained head this one descends from (itself, or what its own recalibration named)
        "head_version": lineage.get("head_version", old.version),
        "method": final.method,
        "params": final.params(),
        "labels": {**labels, "model": pv.model, "sample_ids": [r.sample_id for r in rows],
                   "label_ids": [r.row_id for r in rows]},
        "selection": report["selection"],
        "before": report["before"],
        "after": report["after"],
        "advice": report["advice"],
        "forced": bool(request.force and report["advice"]["action"] == "retrain"),
    }
    meta = replace(
        old, version=version, calibration=final.method, created_at=created.isoformat(),
        metrics={**old.metrics, "recalibration": {"method": final.method, "n_labels": labels["n"],
                                                  "before": report["before"], "after": report["after"]}},
        extra={**old.extra, "recalibration": recal},
    )
    return save_artifact(_out_dir(settings, request, pv, version), meta, head)

