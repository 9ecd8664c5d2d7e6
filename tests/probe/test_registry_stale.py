"""Probe registry (one active probe per model) and the stale-probe guard, on SQLite and PostgreSQL."""

import threading

import pytest
from sqlalchemy import select

from alerts.rules import PROBE_STALE
from monitor.config import ModelEntry, Settings
from monitor.daemon.runner import JobContext
from monitor.daemon.scoring import ScoreJob
from monitor.probe.factory import make_scorer
from monitor.probe.registry import ProbeNotFoundError, activate_probe, active_probe, register_probe
from monitor.probe.stale import ProbeStaleError
from storage.db import session_factory
from storage.models import Alert, AlertDelivery, ProbeVersion
from tests.probe.conftest import deploy_with_probe, make_artifact, redeploy


def test_one_active_probe_per_model(engine, tmp_path):
    sessions = session_factory(engine)
    a = make_artifact(tmp_path / "a", "a" * 64, 8, 4, seed=1)
    b = make_artifact(tmp_path / "b", "a" * 64, 8, 4, seed=2)
    other = make_artifact(tmp_path / "o", "b" * 64, 8, 4, seed=3)
    with sessions() as s:
        register_probe(s, "m1", a)
        register_probe(s, "m1", b)
        register_probe(s, "m2", other)
        s.commit()
    with sessions() as s:
        assert active_probe(s, "m1").version == b.meta.version
        assert active_probe(s, "m2").version == other.meta.version
        activate_probe(s, "m1", a.meta.version)
        s.commit()
    with sessions() as s:
        rows = s.scalars(select(ProbeVersion).where(ProbeVersion.model == "m1")).all()
        assert sorted((r.version, r.active) for r in rows) == sorted([(a.meta.version, True), (b.meta.version, False)])
        assert active_probe(s, "m2").active  # activation is per model
        with pytest.raises(ProbeNotFoundError, match="no probe version 'nope'"):
            activate_probe(s, "m1", "nope")
        register_probe(s, "m1", a, activate=False)  # re-registering is an update, not a duplicate
        s.commit()
        assert len(s.scalars(select(ProbeVersion).where(ProbeVersion.model == "m1")).all()) == 2


def test_stale_probe_stops_scoring_and_raises_probe_stale_alert(engine, db_url, tmp_path, llava_dir, llava, synpope_items):
    sessions = session_factory(engine)
    deploy, art, settings = deploy_with_probe(
        tmp_path, llava_dir, llava, sessions, storage={"url": db_url},
        alerts={"channels": [{"name": "ops", "url": "http://127.0.0.1:9/hook"}]})
    ctx = JobContext("score", "w", sessions, 30.0, threading.Event())
    job = ScoreJob(settings, make_scorer)
    job(ctx)  # loads the scorer (nothing pending)
    scorer = job._scorers["tiny-llava"]
    assert len(scorer.score(synpope_items[:2])) == 2  # fresh probe: scores

    redeploy(deploy)
    calls = []
    handle = scorer.adapter.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ProbeStaleError, match="stale"):
            scorer.score(synpope_items[:2])
    finally:
        handle.remove()
    assert calls == []  # not one forward pass with the mismatched probe

    for _ in range(2):  # the daemon's next load attempts refuse too, and the score job raises the alert
        job.forget("tiny-llava")
        job._load_errors.clear()
        job(ctx)
        assert "tiny-llava" not in job._scorers
    with sessions() as s:
        alerts = s.scalars(select(Alert).where(Alert.rule == PROBE_STALE.name)).all()
    assert len(alerts) == 1  # refreshed, not duplicated
    a = alerts[0]
    assert (a.state, a.model, a.severity, a.probe_version) == ("firing", "tiny-llava", "critical", art.meta.version)
    assert a.metrics["probe_fingerprint"] == llava.fingerprint != a.metrics["served_fingerprint"]
    assert a.evidence["model_path"] == settings.models["tiny-llava"].path
    with sessions() as s:  # one outbox row for the configured channel: the alert is delivered like any other
        rows = s.scalars(select(AlertDelivery).where(AlertDelivery.alert_id == a.id)).all()
        assert [(r.channel, r.event) for r in rows] == [("ops", "firing")]

    # a probe trained on the new deploy is activated: scoring resumes and the alert resolves
    from monitor.adapter.loading import fingerprint_folder

    fresh = make_artifact(tmp_path / "probe2", fingerprint_folder(deploy), art.meta.hidden_size, llava.num_layers,
                          seed=7)
    with sessions() as s:
        register_probe(s, "tiny-llava", fresh)
        s.commit()
    job._load_errors.clear()
    job(ctx)
    assert len(job._scorers["tiny-llava"].score(synpope_items[:1])) == 1
    with sessions() as s:
        assert s.get(Alert, a.id).state == "resolved"
    job.close()


def test_factory_without_an_active_probe_says_how_to_get_one(engine, db_url, llava_dir):
    settings = Settings(storage={"url": db_url}, models={"x": ModelEntry(path=str(llava_dir))})
    with pytest.raises(LookupError, match="vlmwatch probe train"):
        make_scorer("x", settings.models["x"], settings, session_factory(engine))
