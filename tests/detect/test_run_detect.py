"""Detectors over a real database: drift fires one alert to a webhook, recovery resolves it;
late and out-of-order evidence is consumed once; a restart continues from the persisted state."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
from sqlalchemy import select

from alerts.outbox import deliver_due
from alerts.payload import verify_signature
from monitor.calibration.history import run_calibrate
from monitor.detect import run_detect
from monitor.detect.synthetic import BinormalProbe
from storage.db import make_engine, session_factory
from storage.models import Alert, DetectorState, DetectorTuning, Label, Reference, Score, utcnow

PROBE = BinormalProbe()


def _stream(n, rate=None, seed=0):
    rng = np.random.default_rng(seed)
    d = None if rate is None else PROBE.d_for_disagreement(rate)
    st = PROBE.sample(1, n, rng, d=d)
    return st.scores[0], st.correct[0]


def _events(got, rule):
    return [json.loads(b)["state"] for h, b in got if json.loads(b)["rule"] == rule]


def test_drift_fires_once_and_resolves(world, fast_settings, make_hook, monkeypatch):
    url, got = make_hook
    monkeypatch.setenv("E2E_SECRET", "k")
    settings = fast_settings([{"name": "h", "kind": "webhook", "url": url, "secret_env": "E2E_SECRET"}])
    world.add(*_stream(600, seed=1))  # the default reference: first 600 labelled samples
    now = utcnow()
    run_calibrate(world.factory, settings, now)
    res = run_detect(world.factory, settings, now)
    with world.factory() as s:
        ref = s.scalars(select(Reference)).one()
        assert ref.stats["human"]["complete"] and ref.stats["human"]["n"] == 600
        tuned = {t.detector for t in s.scalars(select(DetectorTuning))}
    assert {"cusum_disagreement:human", "cusum_residual:human"} <= tuned
    assert not [t for t in res.transitions if t.event == "firing"]
    # in control: no alarm
    for i in range(3):
        world.add(*_stream(500, seed=10 + i))
        run_detect(world.factory, settings, now + timedelta(minutes=i + 1))
    deliver_due(world.factory, settings.alerts, now=now + timedelta(minutes=4))
    assert _events(got, "probe_disagreement_drift") == []
    # drift to disagreement 0.25: the disagreement CUSUM fires, once, across several evaluations
    for i in range(4):
        world.add(*_stream(400, rate=0.25, seed=20 + i))
        run_calibrate(world.factory, settings, now + timedelta(minutes=10 + i))
        run_detect(world.factory, settings, now + timedelta(minutes=10 + i))
        deliver_due(world.factory, settings.alerts, now=now + timedelta(minutes=10 + i))
    assert _events(got, "probe_disagreement_drift") == ["firing"]
    headers, body = next((h, b) for h, b in got if json.loads(b)["rule"] == "probe_disagreement_drift")
    assert verify_signature(body, headers["X-Vlmwatch-Signature"], "k")
    alert = json.loads(body)
    assert alert["metrics"]["disagreement_window"] > 0.15
    assert alert["detector"]["name"] == "cusum_disagreement:human" and alert["detector"]["test"] == "disagreement"
    assert alert["detector"]["stat"] > alert["detector"]["h"] > 0 and alert["detector"]["tuning_id"]
    assert alert["metrics"]["statistic"] == alert["detector"]["stat"]
    assert alert["metrics"]["disagreement_window_ci"][0] < alert["metrics"]["disagreement_window"]
    assert alert["metrics"]["reference_disagreement"] < 0.15 and alert["metrics"]["window_labels"] >= 25
    cal = alert["metrics"]["calibration_window"]  # context: the rolling window's metrics with CIs
    assert cal["n"] == 300 and cal["auroc_ci"][0] <= cal["auroc"] <= cal["auroc_ci"][1]
    assert alert["evidence"]["reference"]["id"] == ref.id and alert["evidence"]["sample_ids"]
    # back in control: the statistic drains below h, then two clear evaluations resolve the alert
    for i in range(8):
        world.add(*_stream(400, seed=40 + i))
        run_detect(world.factory, settings, now + timedelta(minutes=20 + i))
        deliver_due(world.factory, settings.alerts, now=now + timedelta(minutes=20 + i))
    assert _events(got, "probe_disagreement_drift") == ["firing", "resolved"]


def test_late_out_of_order_evidence_counted_once_and_restart_continues(world, fast_settings, db_url):
    settings = fast_settings()
    world.add(*_stream(600, seed=2))
    now = utcnow()
    run_detect(world.factory, settings, now)
    # 300 samples whose labels arrive before their scores, in reverse order
    scores, correct = _stream(300, seed=3)
    ids = world.add(scores, correct, label=False, score=False)
    with world.factory() as s:
        for sid, y in reversed(list(zip(ids, correct))):
            s.add(Label(sample_id=sid, correct=bool(y), source="human"))
        s.commit()
    run_detect(world.factory, settings, now + timedelta(minutes=1))
    with world.factory() as s:
        st = s.scalars(select(DetectorState).filter_by(detector="cusum_disagreement:human")).one()
        assert st.state["detector"]["n"] == 0 and len(st.state["pending"]) == 300
    # the scores arrive (half now); a fresh engine = a restarted daemon continues from the stored state
    with world.factory() as s:
        for sid, p in list(zip(ids, scores))[:150]:
            s.add(Score(sample_id=sid, probe_version_id=world.pv_id, p_correct=float(p)))
        s.commit()
    eng2 = make_engine(db_url)
    try:
        f2 = session_factory(eng2)
        run_detect(f2, settings, now + timedelta(minutes=2))
        run_detect(f2, settings, now + timedelta(minutes=3))  # nothing new: nothing consumed twice
        with f2() as s:
            st = s.scalars(select(DetectorState).filter_by(detector="cusum_disagreement:human")).one()
            assert st.state["detector"]["n"] == 150 and len(st.state["pending"]) == 150
            # a second label for an already counted sample is not counted again
            s.add(Label(sample_id=ids[0], correct=True, source="ground_truth"))
            for sid, p in list(zip(ids, scores))[150:]:
                s.add(Score(sample_id=sid, probe_version_id=world.pv_id, p_correct=float(p)))
            s.commit()
        run_detect(f2, settings, now + timedelta(minutes=4))
        with f2() as s:
            st = s.scalars(select(DetectorState).filter_by(detector="cusum_disagreement:human")).one()
            assert st.state["detector"]["n"] == 300 and st.state["pending"] == []
            expected = int(np.sum((scores >= 0.5) != correct))
            assert st.state["detector"]["ones"] == expected
            assert s.scalars(select(Alert)).all() == []
    finally:
        eng2.dispose()
