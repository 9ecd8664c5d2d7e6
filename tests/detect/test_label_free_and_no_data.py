"""Label-free early warnings (ADWIN on scores, Evidently window drift), no-data alerts, and
`vlmwatch detect tune` storing its tunings."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
from sqlalchemy import select

from alerts.outbox import deliver_due
from monitor.detect import run_detect
from monitor.detect.synthetic import BinormalProbe
from monitor.detect.window_drift import score_drift
from storage.models import Alert, DetectorState, DetectorTuning, Label, utcnow


def _stream(n, seed):
    st = BinormalProbe().sample(1, n, np.random.default_rng(seed))
    return st.scores[0], st.correct[0]


def test_score_shift_fires_adwin_and_window_drift(world, fast_settings):
    settings = fast_settings()
    world.add(*_stream(600, 1), seconds_apart=60, label=False)  # reference: first 600 scores, no labels at all
    now = utcnow()
    run_detect(world.factory, settings, now)
    last_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    s, y = _stream(400, 2)
    world.add(s, y, label=False, start=last_hour, seconds_apart=5)  # in control, unlabelled
    res = run_detect(world.factory, settings, now)
    status = {sig.detector: sig.status for sig in res.signals}
    assert status["adwin_scores"] == "clear" and status["window_drift"] == "clear"
    shifted = np.clip(s * 0.55, 0, 1)  # the score distribution moves down (e.g. a new input style)
    world.add(shifted, y, label=False, start=now.replace(minute=0, second=0, microsecond=0), seconds_apart=5)
    res = run_detect(world.factory, settings, now + timedelta(hours=1))
    by = {sig.detector: sig for sig in res.signals}
    assert by["adwin_scores"].status == "firing"
    assert by["adwin_scores"].metrics["mean_after"] < by["adwin_scores"].metrics["mean_before"]
    wd = by["window_drift"]
    assert wd.status == "firing" and wd.metrics["drift_score"] > wd.detector_state["threshold"] and wd.detector_state["tuned"]
    assert wd.metrics["mean_score"] < wd.metrics["reference_mean_score"]
    with world.factory() as s_:
        rules = {a.rule: a for a in s_.scalars(select(Alert).where(Alert.state == "firing"))}
        assert {"probe_score_shift", "score_distribution_drift"} <= set(rules)
        assert "probe_disagreement_drift" not in rules  # no labels, no disagreement evidence
        assert rules["probe_score_shift"].detector["needs_label_confirmation"] is True
    # the same window is not tested twice
    res = run_detect(world.factory, settings, now + timedelta(hours=1))
    assert {sig.detector: sig.status for sig in res.signals}["window_drift"] == "partial"


def test_evidently_drift_test_directly():
    rng = np.random.default_rng(0)
    ref = rng.beta(6, 2, 2000)
    same = score_drift(ref, rng.beta(6, 2, 500), method="psi", threshold=0.2)
    moved = score_drift(ref, rng.beta(3, 3, 500), method="psi", threshold=0.2)
    assert not same["drift"] and moved["drift"] and moved["score"] > same["score"]
    ks = score_drift(ref, rng.beta(3, 3, 500), method="ks", threshold=0.05)
    assert ks["drift"] and ks["score"] < 0.05  # p-value method



def test_no_data_alert_fires_and_resolves(world, fast_settings, make_hook):
    url, got = make_hook
    settings = fast_settings([{"name": "h", "kind": "webhook", "url": url}], no_data_minutes=60)
    ids = world.add(*_stream(50, 3))
    t = utcnow()
    run_detect(world.factory, settings, t)
    res = run_detect(world.factory, settings, t + timedelta(hours=2))
    assert [x.rule for x in res.transitions] == ["no_data"]
    with world.factory() as s:
        s.add(Label(sample_id=ids[0], correct=True, source="human", created_at=t + timedelta(hours=2, minutes=1)))
        s.commit()
    res = run_detect(world.factory, settings, t + timedelta(hours=2, minutes=2))
    assert [(x.rule, x.event) for x in res.transitions] == [("no_data", "resolved")]
    deliver_due(world.factory, settings.alerts, now=t + timedelta(hours=2, minutes=3))
    assert [json.loads(b)["state"] for _, b in got] == ["firing", "resolved"]


def test_detect_tune_cli_stores_tunings(world, db_url, vlmwatch_cli):
    world.add(*_stream(600, 4))
    env = {"VLMWATCH_CALIBRATION__REFERENCE_N": "600", "VLMWATCH_DETECT__SIMULATIONS": "300",
           "VLMWATCH_DETECT__ADWIN_SIMULATIONS": "10", "VLMWATCH_DETECT__HORIZON": "5000"}
    res = vlmwatch_cli("detect", "tune", "--seed", "1", db_url=db_url, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    out = {r["detector"]: r for r in json.loads(res.stdout)}
    assert {"cusum_disagreement:human", "cusum_residual:human", "adwin_scores"} <= set(out)
    assert "cusum_disagreement:self_consistency" not in out  # no spot checks: nothing to tune on
    cd = out["cusum_disagreement:human"]
    assert 0.05 < cd["params"]["p0"] < 0.16 and cd["params"]["h"] > 0
    assert cd["simulated_false_alarm_rate"] <= 0.12
    with world.factory() as s:
        assert len(s.scalars(select(DetectorTuning)).all()) == len(out)
        assert s.scalars(select(DetectorState)).all() == []  # tuning does not start detectors
