"""Per-task slices end to end on a real database: calibration windows per task beside the overall
ones, and a shift confined to one task's samples fires that slice's alert (with its task) while
the other task's slice stays quiet; each alert resolves on its own."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy import func, select

from alerts.channels import AlertmanagerChannel
from alerts.payload import alert_payload, fingerprint
from monitor.calibration.history import run_calibrate
from monitor.detect import run_detect
from monitor.detect.synthetic import BinormalProbe
from storage.models import Alert, CalibrationWindow, DetectorState, DetectorTuning, Reference, utcnow

PROBE = BinormalProbe()
RULE = "probe_disagreement_drift"


def _stream(n, rate=None, seed=0):
    d = None if rate is None else PROBE.d_for_disagreement(rate)
    st = PROBE.sample(1, n, np.random.default_rng(seed), d=d)
    return st.scores[0], st.correct[0]


def _round(world, settings, now, seed, describe_rate=None, n=300):
    world.add(*_stream(n, seed=seed), task="yesno")
    world.add(*_stream(n, rate=describe_rate, seed=seed + 1000), task="describe")
    run_calibrate(world.factory, settings, now)
    return run_detect(world.factory, settings, now)


def _alerts(world, task):
    with world.factory() as s:
        return [(a.state, a.fingerprint) for a in s.scalars(select(Alert).where(Alert.rule == RULE)
                                                              .order_by(Alert.started_at)) if a.task == task]


def test_calibration_windows_per_task_beside_the_overall_ones(world, fast_settings):
    settings = fast_settings()
    world.add(*_stream(150, seed=1), task="yesno")
    world.add(*_stream(100, rate=0.4, seed=2), task="describe")
    world.add(*_stream(50, seed=3))  # no task: counted overall only
    run_calibrate(world.factory, settings, utcnow())
    with world.factory() as s:
        n = dict(s.execute(select(CalibrationWindow.task, func.sum(CalibrationWindow.n)).where(
            CalibrationWindow.kind == "time", CalibrationWindow.source == "human").group_by(CalibrationWindow.task)).all())
        rolling = {w.task: w for w in s.scalars(select(CalibrationWindow).where(
            CalibrationWindow.kind == "rolling", CalibrationWindow.source == "human"))}
    assert n == {"": 300, "yesno": 150, "describe": 100}
    assert set(rolling) == {"", "yesno", "describe"} and rolling["describe"].n == 100
    # the shift is visible in the describe slice's own window, diluted overall
    assert rolling["describe"].agreement < rolling[""].agreement < rolling["yesno"].agreement


def test_a_shift_in_one_task_alerts_on_that_slice_only(world, fast_settings):
    settings = fast_settings()
    now = utcnow()
    _round(world, settings, now, seed=1)  # the reference: 300 labelled samples of each task
    with world.factory() as s:
        ref = s.scalars(select(Reference)).one()
        assert ref.stats["human"]["n"] == 600
        assert {t: v["human"]["n"] for t, v in ref.stats["tasks"].items()} == {"yesno": 300, "describe": 300}
        tuned = {t.detector for t in s.scalars(select(DetectorTuning))}
    assert {"cusum_disagreement:human", "cusum_disagreement:human@yesno", "cusum_disagreement:human@describe",
            "cusum_residual:human@describe"} <= tuned
    for i in range(2):  # in control: nothing fires anywhere
        _round(world, settings, now + timedelta(minutes=1 + i), seed=10 + 2 * i)
    assert _alerts(world, "describe") == _alerts(world, "yesno") == []
    # only describe's answers degrade (disagreement 0.3); yes/no stays in control
    for i in range(4):
        res = _round(world, settings, now + timedelta(minutes=10 + i), seed=20 + 2 * i, describe_rate=0.3)
    sliced = [sig for sig in res.signals if sig.detector == "cusum_disagreement" and sig.window.get("source") == "human"]
    assert {sig.task for sig in sliced} == {None, "yesno", "describe"}
    assert {sig.task: sig.status for sig in sliced}["yesno"] == "clear"
    describe = _alerts(world, "describe")
    assert [state for state, _ in describe] == ["firing"] and _alerts(world, "yesno") == []
    assert describe[0][1] == fingerprint(RULE, "m1", "v1", "describe") != fingerprint(RULE, "m1", "v1")
    with world.factory() as s:
        alert = s.scalars(select(Alert).where(Alert.rule == RULE, Alert.task == "describe")).one()
        payload = alert_payload(alert, "firing", now)
        assert payload["task"] == "describe" and alert.detector["name"] == "cusum_disagreement:human@describe"
        assert "(task describe)" in payload["summary"] and alert.window["task"] == "describe"
        import json

        assert json.loads(AlertmanagerChannel().render(payload))[0]["labels"]["task"] == "describe"
        names = set(s.scalars(select(DetectorState.detector)))
    assert {"cusum_disagreement:human", "cusum_disagreement:human@describe", "cusum_disagreement:human@yesno"} <= names
    overall = _alerts(world, None)  # the diluted overall stream has its own alert, if any: never the slice's
    assert all(fp != describe[0][1] for _, fp in overall)
    # describe recovers: its alert resolves by itself
    for i in range(10):
        _round(world, settings, now + timedelta(minutes=20 + i), seed=40 + 2 * i)
        if [state for state, _ in _alerts(world, "describe")] == ["resolved"]:
            break
    assert [state for state, _ in _alerts(world, "describe")] == ["resolved"] and _alerts(world, "yesno") == []


def test_a_task_that_is_all_the_traffic_adds_no_second_detector(world, fast_settings):
    settings = fast_settings()
    now = utcnow()
    world.add(*_stream(600, seed=5), task="yesno")  # yes/no only: its slice would repeat the overall one
    run_calibrate(world.factory, settings, now)
    res = run_detect(world.factory, settings, now)
    assert {(sig.detector, sig.task, sig.window.get("source")) for sig in res.signals if sig.task} == set()
    with world.factory() as s:
        assert not [n for n in s.scalars(select(DetectorState.detector)) if "@" in n]
        assert set(s.scalars(select(CalibrationWindow.task).distinct())) == {"", "yesno"}  # its windows exist
