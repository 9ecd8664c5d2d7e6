"""The database collector behind /metrics, over real calibrate and detect runs on both backends."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, select

from monitor.api.db_metrics import CALIBRATION_STATS, DatabaseCollector
from storage.db import make_engine, session_factory
from storage.models import Alert, AlertDelivery, CalibrationWindow, Label, Sample, SpotCheck, utcnow
from tests.api.helpers import drift
from tests.detect.conftest import fast_settings, world  # noqa: F401  (fixtures)

def _values(collector: DatabaseCollector) -> dict[tuple[str, frozenset], float]:
    return {(smp.name, frozenset(smp.labels.items())): smp.value for fam in collector.collect() for smp in fam.samples}


def _get(values, name: str, **labels) -> float | None:
    return values.get((name, frozenset(labels.items())))


def test_metrics_mirror_windows_detectors_and_alerts(world, fast_settings):
    settings = fast_settings()
    now, res = drift(world, settings)
    values = _values(DatabaseCollector(world.factory, settings, cache_seconds=0))
    pv = {"model": "m1", "probe_version": "v1"}
    assert _get(values, "vlmwatch_database_up") == 1.0
    assert _get(values, "vlmwatch_probe_info", layer="3", pooling="last", **pv) == 1.0

    # calibration: the newest window of each kind x source, with its CI bounds
    with world.factory() as s:
        newest = {}
        for row in s.scalars(select(CalibrationWindow).order_by(CalibrationWindow.window_end, CalibrationWindow.id)):
            newest[(row.kind, row.source)] = row
    assert {("rolling", "human"), ("time", "human"), ("rolling", "combined")} <= set(newest)
    for (kind, source), row in newest.items():
        lab = dict(pv, source=source, task="all", window=kind)
        for name, (key, ci_key, _) in CALIBRATION_STATS.items():
            if row.metrics.get(key) is not None:
                assert _get(values, f"vlmwatch_calibration_{name}", **lab) == row.metrics[key], (name, kind, source)
            if row.metrics.get(ci_key):
                assert _get(values, f"vlmwatch_calibration_{name}_ci_lower", **lab) == row.metrics[ci_key][0]
                assert _get(values, f"vlmwatch_calibration_{name}_ci_upper", **lab) == row.metrics[ci_key][1]
        assert _get(values, "vlmwatch_calibration_window_samples", **lab) == row.n
        assert _get(values, "vlmwatch_calibration_window_partial", **lab) == float(row.partial)
        assert _get(values, "vlmwatch_calibration_window_end_timestamp_seconds", **lab) == row.window_end.timestamp()
    rolling = dict(pv, source="human", task="all", window="rolling")
    assert _get(values, "vlmwatch_calibration_auroc_ci_lower", **rolling) < _get(values, "vlmwatch_calibration_auroc", **rolling)
    assert _get(values, "vlmwatch_calibration_ece", **rolling) == newest[("rolling", "human")].ece  # the row's ECE column

    # detectors: the same statistic and threshold as the detect job's signals of its last run
    checked = set()
    for sig in res.signals:
        if not sig.detector.startswith("cusum") or sig.status == "partial":
            continue
        lab = dict(pv, detector=sig.detector, source=sig.window["source"])
        stat = sig.metrics["statistic"]
        assert _get(values, "vlmwatch_detector_statistic", **lab) == stat, lab
        assert _get(values, "vlmwatch_detector_threshold", **lab) == sig.metrics["threshold"], lab
        assert _get(values, "vlmwatch_detector_firing", **lab) == float(sig.status == "firing"), lab
        checked.add(sig.detector)
    assert checked == {"cusum_disagreement", "cusum_residual"}
    dis = dict(pv, detector="cusum_disagreement", source="human")
    assert _get(values, "vlmwatch_detector_firing", **dis) == 1.0
    assert _get(values, "vlmwatch_detector_statistic", **dis) > _get(values, "vlmwatch_detector_threshold", **dis) > 0
    assert _get(values, "vlmwatch_detector_alarms_total", **dis) >= 1
    assert _get(values, "vlmwatch_detector_alarms_total", **dict(pv, detector="adwin_scores", source="")) is not None

    # alerts: 1 for each firing alert, 0 for the configured rules that are not firing
    with world.factory() as s:
        firing = {a.rule for a in s.scalars(select(Alert).where(Alert.state == "firing"))}
    assert "probe_disagreement_drift" in firing
    for rule in settings.alerts.rules:
        lab = dict(pv, rule=rule.name, severity=rule.severity)
        assert _get(values, "vlmwatch_alert_firing", **lab) == float(rule.name in firing), rule.name


def test_queues_lag_budget_and_outbox(world, fast_settings):
    settings = fast_settings()
    now = utcnow()
    with world.factory() as s:
        s.execute(insert(Sample), [dict(id=f"p{i}", model="m1", ts=now, received_at=now - timedelta(seconds=30 + i),
                                        prompt="q", answer="a") for i in range(5)])
        s.execute(insert(Sample), [dict(id="done", model="m1", ts=now, received_at=now - timedelta(hours=5), prompt="q",
                                        answer="a", status="scored")])
        s.execute(insert(SpotCheck), [dict(sample_id=sid, k=10, one_token=True, agreement=1.0, entropy=0.0, inclusion_prob=1.0,
                                           reason="uniform", compute_seconds=secs, created_at=at)
                                      for sid, secs, at in (("p0", 2.5, now - timedelta(minutes=5)),
                                                            ("p1", 4.0, now - timedelta(minutes=59)),
                                                            ("p2", 100.0, now - timedelta(minutes=61)))])
        s.add(Label(response_id="chatcmpl-later", correct=True, source="human"))
        s.add(Alert(id="a1", fingerprint="f", rule="r", state="firing", severity="critical", model="m1", probe_version="v1",
                    started_at=now))
        s.flush()
        for i, status in enumerate(("pending", "pending", "sending", "gave_up", "sent")):
            s.add(AlertDelivery(id=f"d{i}", alert_id="a1", channel="c", event="firing", body="{}", status=status,
                                deadline_at=now))
        s.commit()
    values = _values(DatabaseCollector(world.factory, settings, cache_seconds=0, now=lambda: now))
    assert _get(values, "vlmwatch_scoring_queue_depth", model="m1") == 5
    assert _get(values, "vlmwatch_scoring_lag_seconds", model="m1") == 34.0  # the oldest pending sample
    assert _get(values, "vlmwatch_spotcheck_budget_used_seconds") == 6.5  # the last hour only
    assert _get(values, "vlmwatch_spotcheck_budget_seconds") == settings.spotcheck.gpu_seconds_per_hour
    assert _get(values, "vlmwatch_labels_waiting_for_sample") == 1
    assert {st: _get(values, "vlmwatch_alert_deliveries", status=st) for st in ("pending", "sending", "gave_up")} == {
        "pending": 2, "sending": 1, "gave_up": 1}
    # a firing alert of a rule not in the config (built-in, or a rule since removed) is exported too
    assert _get(values, "vlmwatch_alert_firing", model="m1", probe_version="v1", rule="r", severity="critical") == 1.0


def test_reads_are_cached_for_the_configured_time(world, fast_settings):
    t = [100.0]
    c = DatabaseCollector(world.factory, fast_settings(), cache_seconds=5, clock=lambda: t[0])
    assert _get(_values(c), "vlmwatch_scoring_queue_depth", model="m1") == 0
    world.add([0.9], [True])  # a pending sample
    t[0] += 4.9
    assert _get(_values(c), "vlmwatch_scoring_queue_depth", model="m1") == 0 and c.reads == 1
    t[0] += 0.2
    assert _get(_values(c), "vlmwatch_scoring_queue_depth", model="m1") == 1 and c.reads == 2


def test_a_database_outage_is_reported_not_raised(tmp_path, fast_settings):
    engine = make_engine(f"sqlite:///{tmp_path / 'not-migrated.db'}")
    values = _values(DatabaseCollector(session_factory(engine), fast_settings(), cache_seconds=0))
    assert _get(values, "vlmwatch_database_up") == 0.0
    assert not [k for k in values if k[0].startswith(("vlmwatch_calibration", "vlmwatch_scoring", "vlmwatch_alert"))]
    engine.dispose()
