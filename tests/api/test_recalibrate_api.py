"""``POST /v1/probes/{model}/recalibrate`` on a real uvicorn server on loopback (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from storage.db import session_factory
from storage.models import ProbeVersion
from tests.api.helpers import API_TOKEN_ENV, serve_api
from tests.probe.recal_world import MODEL, make_probe, seed_labels


@pytest.fixture
def api(engine, tmp_path, monkeypatch):
    monkeypatch.setenv(API_TOKEN_ENV, "s3cret")
    yield from serve_api(engine, timeout=60, sections={"calibration": {"bootstrap": 200},
                                                       "recalibration": {"probe_dir": str(tmp_path / "recalibrated")}})


def test_recalibrate_route_needs_the_token_and_activates_on_request(api, engine, tmp_path):
    sessions = session_factory(engine)
    probe, pv_id = make_probe(tmp_path, sessions)
    seed_labels(sessions, probe.head, pv_id, 80, slope=1.0, shift=-2.0, seed=1)
    auth = {"Authorization": "Bearer s3cret"}

    assert api.post(f"/v1/probes/{MODEL}/recalibrate").status_code == 401
    r = api.post(f"/v1/probes/{MODEL}/recalibrate", headers=auth)
    assert r.status_code == 409 and r.json()["error"] == "too_few_labels" and r.json()["needed"] == 100, r.text
    r = api.post("/v1/probes/other/recalibrate", headers=auth)
    assert r.status_code == 404 and r.json()["error"] == "unknown_model"
    r = api.post(f"/v1/probes/{MODEL}/recalibrate", headers=auth, json={"method": "beta"})
    assert r.status_code == 422 and "method" in r.json()["error"]

    seed_labels(sessions, probe.head, pv_id, 120, slope=1.0, shift=-2.0, seed=2, prefix="t")
    r = api.post(f"/v1/probes/{MODEL}/recalibrate", headers=auth, json={"activate": True, "max_labels": 150})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "activated" and doc["labels"]["n"] == 150
    assert doc["after"]["ece_mass"] < doc["before"]["ece_mass"]
    assert doc["new_probe"]["path"].startswith(str(tmp_path / "recalibrated"))
    with sessions() as s:
        active = s.scalars(select(ProbeVersion).where(ProbeVersion.model == MODEL, ProbeVersion.active.is_(True))).one()
    assert active.version == doc["new_probe"]["version"]


def test_recalibrate_route_answers_retrain_when_ranking_broke(api, engine, tmp_path):
    sessions = session_factory(engine)
    probe, pv_id = make_probe(tmp_path, sessions)
    seed_labels(sessions, probe.head, pv_id, 200, slope=0.0, shift=0.4, seed=3)
    r = api.post(f"/v1/probes/{MODEL}/recalibrate", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "retrain" and "ranking broke" in r.json()["message"]
    assert r.json()["new_probe"] is None
