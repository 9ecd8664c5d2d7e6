"""The input-drift job: a reference per served model, tumbling windows tested against it, alerts.

Per model with recorded input features:

1. the active reference (``input_references``) is the first ``inputs.reference_n`` scored
   samples, created on first need (thresholds tuned then, :func:`monitor.inputs.drift.fit_reference`),
   or a window the operator pinned (:func:`pin_reference`, ``vlmwatch inputs pin``);
2. the samples after it, in request-time order, are cut into windows of ``inputs.window``; a window
   closes only when no earlier sample of the model is still pending scoring;
3. each window is tested (:func:`monitor.inputs.drift.test_window`) and gives an ``input_drift``
   signal to the alert rules (``alerts.rules``, detector ``input_drift``): firing once
   ``inputs.confirm_windows`` windows in a row drifted (one drifted window alone waits), clear when
   the window did not drift. The
   alert names the moved features with effect sizes, and states what the correctness evidence of the
   same windows shows (agreement and AUROC with CIs, per evidence source, or "not enough labels
   yet"). It resolves after ``resolve_after`` clear windows, or when a new reference is pinned.

The reference row carries the job's cursor and the recent window results (``state``), which the
report, the JSON summary and ``/metrics`` read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from alerts.lifecycle import Signal, evaluate
from alerts.outbox import enqueue
from alerts.payload import fingerprint
from monitor.config import Settings
from monitor.inputs.drift import FeatureTable, fit_reference, test_window
from monitor.inputs.features import unpack_embedding
from storage.models import Alert, InputFeature, InputReference, ProbeVersion, Sample, utcnow

__all__ = ["InputDriftRun", "run_input_drift", "pin_reference", "active_reference", "reference_tables", "RULE", "DETECTOR"]

logger = logging.getLogger(__name__)

DETECTOR = "input_drift"
RULE = "input_drift"
_KEEP_WINDOWS = 500  # window results kept in the reference's state
_MAX_WINDOWS_PER_RUN = 50


@dataclass
class InputDriftRun:
    windows: int = 0  # windows tested
    references: list[int] = field(default_factory=list)  # references created this run
    signals: list[Signal] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.windows


def active_reference(session: Session, model: str) -> InputReference | None:
    return session.scalars(select(InputReference).where(InputReference.model == model,
                                                        InputReference.active.is_(True))).first()


def _rows(session: Session, model: str, *, after: tuple[datetime, str] | None = None, start: datetime | None = None,
          end: datetime | None = None, before: datetime | None = None, limit: int | None = None) -> list[InputFeature]:
    q = select(InputFeature).where(InputFeature.model == model)
    if after is not None:
        q = q.where(or_(InputFeature.ts > after[0], and_(InputFeature.ts == after[0], InputFeature.sample_id > after[1])))
    if start is not None:
        q = q.where(InputFeature.ts >= start)
    if end is not None:
        q = q.where(InputFeature.ts <= end)
    if before is not None:
        q = q.where(InputFeature.ts < before)
    q = q.order_by(InputFeature.ts, InputFeature.sample_id)
    if limit is not None:
        q = q.limit(limit)
    return list(session.scalars(q))


def _table(rows: list[InputFeature]) -> FeatureTable:
    return FeatureTable.from_rows([(r.features or {}, unpack_embedding(r.embedding) if r.embedding else None) for r in rows])


def reference_tables(session: Session, ref: InputReference) -> tuple[FeatureTable, FeatureTable]:
    """The reference's feature table (what windows are tested against) and that of every sample of its
    model recorded after it (held out from the fit: the stationary pool of a false-alarm simulation)."""
    ref_rows = _rows(session, ref.model, start=ref.window_start, end=ref.window_end, limit=ref.n)
    last = ref_rows[-1]
    return _table(ref_rows), _table(_rows(session, ref.model, after=(last.ts, last.sample_id)))


def _fit(rows: list[InputFeature], settings: Settings) -> dict[str, Any]:
    c = settings.inputs
    return fit_reference(_table(rows), window=c.window, horizon=settings.detect.horizon,
                         target=settings.detect.target_false_alarm_rate, simulations=c.simulations,
                         embedding_dims=c.embedding_dims, min_new_share=c.min_new_category_share)


def _new_reference(session: Session, model: str, rows: list[InputFeature], settings: Settings, pinned: bool) -> InputReference:
    stats = _fit(rows, settings)
    last = rows[-1]
    ref = InputReference(model=model, window_start=rows[0].ts, window_end=last.ts, n=len(rows), pinned=pinned,
                         active=True, stats=stats, state={"cursor": [last.ts.isoformat(), last.sample_id], "windows": []})
    session.add(ref)
    session.flush()
    logger.info("model %s: input reference %d over %d samples (p threshold %.2e, %.1f effective tests)", model, ref.id,
                len(rows), stats["p_threshold"], stats["effective_tests"])
    return ref


def pin_reference(session: Session, settings: Settings, model: str, start: datetime, end: datetime) -> InputReference:
    """Make the scored samples of ``model`` in [start, end] its input reference; resolves an open
    ``input_drift`` alert (the operator accepted the new inputs). Commits."""
    rows = _rows(session, model, start=start, end=end)
    if len(rows) < 2 * settings.inputs.window:
        raise ValueError(f"model {model!r} has {len(rows)} scored samples with input features in {start} .. {end}; "
                         f"a reference needs at least {2 * settings.inputs.window} (2 windows)")
    for old in session.scalars(select(InputReference).where(InputReference.model == model, InputReference.active.is_(True))):
        old.active = False
    session.flush()
    ref = _new_reference(session, model, rows, settings, pinned=True)
    now = utcnow()
    fp = fingerprint(RULE, model, None)
    for alert in session.scalars(select(Alert).where(Alert.fingerprint == fp, Alert.state == "firing")):
        alert.state, alert.resolved_at = "resolved", now
        alert.metrics = {**(alert.metrics or {}), "at_resolve": {"reason": "new input reference pinned", "reference_id": ref.id}}
        enqueue(session, settings.alerts, alert, "resolved", now)
    session.commit()
    return ref


def _evidence(session: Session, settings: Settings, model: str, start: datetime, end: datetime,
              ref: InputReference) -> dict[str, Any]:
    """Correctness evidence of the samples in [start, end] and of the reference period, per source."""
    from monitor.calibration.evidence import SOURCES, as_arrays, load_evidence
    from monitor.calibration.metrics import window_metrics

    pv = session.scalars(select(ProbeVersion).where(ProbeVersion.model == model, ProbeVersion.active.is_(True))).first()
    if pv is None:
        return {"status": "no active probe"}
    out: dict[str, Any] = {"probe_version": pv.version}
    need = settings.calibration.min_labels
    tiny = timedelta(microseconds=1)
    for source in SOURCES:
        part: dict[str, Any] = {}
        for name, (a, b) in (("window", (start, end)), ("reference", (ref.window_start, ref.window_end))):
            rows = load_evidence(session, model, pv.id, source, start=a, end=b + tiny)
            if len(rows) < need:
                part[name] = {"n": len(rows), "status": f"not enough labels yet ({len(rows)} < {need})"}
                continue
            s, y = as_arrays(rows)
            m = window_metrics(s, y, threshold=pv.threshold, bins=settings.calibration.bins,
                               bootstrap=settings.calibration.bootstrap, rng=np.random.default_rng(0))
            part[name] = {k: m.get(k) for k in ("n", "agreement", "agreement_ci", "auroc", "auroc_ci", "accuracy", "accuracy_ci")}
        out[source] = part
    return out


def _describe(result: dict[str, Any]) -> list[dict[str, Any]]:
    moved = []
    for name in result["moved"]:
        if name == "vision_embedding":
            e = result["embedding"]
            moved.append({"feature": name, "test": "mmd", "mmd2": e["mmd2"], "threshold": e["threshold"], "effect": e["effect"]})
            continue
        c = result["features"][name]
        item = {"feature": name, "test": c["test"], "p_value": c.get("p_value"), "effect": c.get("effect")}
        if c["kind"] == "numeric":
            item.update(effect_unit="reference sd (mean shift)", reference_median=c["reference_median"],
                        window_median=c["window_median"])
        else:
            item.update(effect_unit="total variation", new_share=c.get("new_share"), new_categories=c.get("new_categories"),
                        reference_shares=c.get("reference_shares"), window_shares=c.get("window_shares"))
        moved.append(item)
    return moved


def _evidence_line(ev: dict[str, Any]) -> str:
    parts = []
    for source in ("human", "self_consistency"):
        w = (ev.get(source) or {}).get("window")
        if not w:
            continue
        if "status" in w:
            parts.append(f"{source}: {w['status']}")
            continue
        r = (ev.get(source) or {}).get("reference") or {}
        ref_txt = f" vs reference {r['agreement']:.3f}" if r.get("agreement") is not None else ""
        ci = w.get("agreement_ci") or [None, None]
        ci_txt = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if None not in ci else ""
        auroc = f", AUROC {w['auroc']:.3f}" if w.get("auroc") is not None else ""
        parts.append(f"{source}: agreement {w['agreement']:.3f}{ci_txt}{ref_txt}{auroc} (n={w['n']})")
    return "; ".join(parts) or ev.get("status", "no correctness evidence")


def _summary(moved: list[dict[str, Any]], ev: dict[str, Any]) -> str:
    bits = []
    for m in moved[:5]:
        if m["feature"] == "vision_embedding":
            bits.append(f"vision embedding (MMD² {m['mmd2']:.4f}, {m['effect']:.1f}x threshold)")
        elif m.get("new_share"):
            bits.append(f"{m['feature']} ({m['new_share']:.0%} in categories the reference never saw)")
        else:
            bits.append(f"{m['feature']} (effect {m['effect']:+.2f} {m.get('effect_unit', '')}, p={m['p_value']:.1e})")
    return "inputs moved: " + ", ".join(bits) + "; correctness evidence in the same windows: " + _evidence_line(ev)


def _closed_before(session: Session, model: str) -> datetime | None:
    """Samples before this time are final: none of the model's samples from then on is still pending."""
    return session.scalar(select(func.min(Sample.ts)).where(Sample.status == "pending", Sample.model == model))


def _test_windows(session: Session, settings: Settings, model: str, ref: InputReference, run: InputDriftRun) -> None:
    w = settings.inputs.window
    state = dict(ref.state or {})
    cursor = state.get("cursor")
    after = (datetime.fromisoformat(cursor[0]), cursor[1]) if cursor else None
    rows = _rows(session, model, after=after, before=_closed_before(session, model), limit=w * _MAX_WINDOWS_PER_RUN)
    if len(rows) < w:
        return
    ref_table = _table(_rows(session, model, start=ref.window_start, end=ref.window_end, limit=ref.n))
    windows = list(state.get("windows") or [])
    for i in range(len(rows) // w):
        chunk = rows[i * w:(i + 1) * w]
        res = test_window(ref_table, _table(chunk), ref.stats)
        start, end = chunk[0].ts, chunk[-1].ts
        if res["drift"] and not state.get("episode_start"):
            state["episode_start"] = start.isoformat()
        window = {"start": start.isoformat(), "end": end.isoformat(), "n": len(chunk), "reference_id": ref.id}
        brief = {**window, "drift": res["drift"], "moved": res["moved"], "min_p": res["min_p"],
                 "mmd2": (res["embedding"] or {}).get("mmd2"),
                 "p_values": {k: v.get("p_value") for k, v in res["features"].items()},
                 "template_shares": res["features"].get("template", {}).get("window_shares")}
        state["drift_run"] = int(state.get("drift_run") or 0) + 1 if res["drift"] else 0
        if res["drift"] and state["drift_run"] >= settings.inputs.confirm_windows:
            moved = _describe(res)
            ev = _evidence(session, settings, model, datetime.fromisoformat(state["episode_start"]), end, ref)
            sig = Signal(detector=DETECTOR, model=model, probe_version=None, status="firing",
                         metrics={"moved": moved, "correctness": ev, "p_threshold": res["p_threshold"],
                                  "embedding": res["embedding"], "reference_id": ref.id,
                                  "consecutive_drifted_windows": state["drift_run"]},
                         detector_state={"reference_id": ref.id, "windows_tested": len(windows) + 1},
                         window=window, evidence={"reference": {"id": ref.id, "pinned": ref.pinned,
                                                                "window_start": ref.window_start.isoformat(),
                                                                "window_end": ref.window_end.isoformat()},
                                                  "sample_ids": [r.sample_id for r in chunk[:20]]},
                         summary=_summary(moved, ev))
        elif res["drift"]:  # not confirmed yet: neither fires nor counts towards resolving
            sig = Signal(detector=DETECTOR, model=model, probe_version=None, status="partial",
                         metrics={"min_p": res["min_p"], "moved": res["moved"]}, window=window,
                         summary=f"window drifted ({', '.join(res['moved'])}); waiting for "
                                 f"{settings.inputs.confirm_windows} in a row")
        else:
            state["episode_start"] = None
            sig = Signal(detector=DETECTOR, model=model, probe_version=None, status="clear",
                         metrics={"min_p": res["min_p"], "p_threshold": res["p_threshold"], "embedding": res["embedding"]},
                         window=window, summary="inputs within the reference")
        evaluate(session, settings.alerts, [sig], utcnow())
        run.signals.append(sig)
        run.windows += 1
        windows.append(brief)
        state["last"] = {**brief, "features": res["features"], "embedding": res["embedding"]}
        state["cursor"] = [end.isoformat(), chunk[-1].sample_id]
    state["windows"] = windows[-_KEEP_WINDOWS:]
    ref.state = state
    session.commit()


def run_input_drift(sessions: sessionmaker[Session], settings: Settings) -> InputDriftRun:
    """One run of the job over every model with input features (the daemon's ``inputs`` job)."""
    run = InputDriftRun()
    if not settings.inputs.enabled:
        return run
    with sessions() as s:
        models = list(s.scalars(select(InputFeature.model).distinct()))
    for model in models:
        with sessions() as s:
            ref = active_reference(s, model)
            if ref is None:
                rows = _rows(s, model, before=_closed_before(s, model), limit=settings.inputs.reference_n)
                if len(rows) < settings.inputs.reference_n:
                    continue
                ref = _new_reference(s, model, rows, settings, pinned=False)
                s.commit()
                run.references.append(ref.id)
            _test_windows(s, settings, model, ref, run)
    return run
