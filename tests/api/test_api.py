"""The HTTP API on a real uvicorn server on loopback, over SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from monitor.api.server import parse_listen
from storage.db import session_factory
from storage.models import Alert, CalibrationWindow, ProbeVersion
from tests.api.helpers import serve_api
from tests.daemon.helpers import png


@pytest.fixture
def api(engine, monkeypatch) -> Iterator[httpx.Client]:
    monkeypatch.delenv("VLMWATCH_TEST_API_TOKEN", raising=False)
    yield from serve_api(engine)


def _sample(i: int, **kw) -> dict:
    d = {"id": f"a{i}", "ts": "2026-11-25T10:00:00Z", "model": "m", "prompt": "Is there a dog?", "answer": "yes",
         "image": "data:image/png;base64," + base64.b64encode(png(i)).decode(), "response_id": f"chatcmpl-a{i}"}
    d.update(kw)
    return d


def test_ingest_is_idempotent_and_names_bad_fields(api: httpx.Client) -> None:
    r = api.post("/v1/samples", json={"samples": [_sample(1), _sample(2, image=base64.b64encode(png(2)).decode())]})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    r = api.post("/v1/samples", json={"samples": [_sample(1), _sample(3, label=True)]})
    assert r.json()["accepted"] == 1 and r.json()["duplicates"] == 1
    # schema errors: 422 with the offending field
    bad = _sample(4)
    del bad["prompt"]
    r = api.post("/v1/samples", json={"samples": [_sample(5), bad]})
    assert r.status_code == 422 and "samples.1.prompt" in r.json()["error"]
    r = api.post("/v1/samples", json={"samples": [_sample(6, colour="red")]})
    assert r.status_code == 422 and "samples.0.colour" in r.json()["error"]
    r = api.post("/v1/samples", json={"samples": []})
    assert r.status_code == 422 and "samples" in r.json()["error"]
    # a record storage cannot take comes back by index; the rest of the batch is stored
    r = api.post("/v1/samples", json={"samples": [_sample(7), _sample(8, image="not an image!")]})
    assert r.status_code == 200
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"][0]["index"] == 1 and "samples.1.image" in r.json()["rejected"][0]["reason"]
    # server-side paths are not read
    r = api.post("/v1/samples", json={"samples": [_sample(9, image="/etc/passwd")]})
    assert r.status_code == 422 and "image" in r.text


def test_labels_by_sample_or_response_id(api: httpx.Client) -> None:
    api.post("/v1/samples", json={"samples": [_sample(1), _sample(2)]})
    r = api.post("/v1/labels", json={"sample_id": "a1", "correct": True, "source": "human"})
    assert r.status_code == 200 and r.json()["stored"] == 1
    r = api.post("/v1/labels", json={"sample_id": "a1", "correct": True, "source": "human"})
    assert r.json()["stored"] == 0 and r.json()["duplicates"] == 1
    r = api.post("/v1/labels", json={"response_id": "chatcmpl-a2", "correct": False})
    assert r.json()["stored"] == 1
    # a label ahead of its sample waits for it
    r = api.post("/v1/labels", json={"response_id": "chatcmpl-a3", "correct": False, "source": "ground_truth"})
    assert r.json()["waiting"] == 1
    r = api.post("/v1/labels", json=[{"sample_id": "a2", "correct": True, "source": "ground_truth"},
                                     {"response_id": "chatcmpl-a1", "correct": False, "source": "ground_truth"}])
    assert r.status_code == 200 and r.json()["stored"] == 2
    # bad bodies name the field
    r = api.post("/v1/labels", json={"sample_id": "a1"})
    assert r.status_code == 422 and "correct" in r.json()["error"]
    r = api.post("/v1/labels", json={"sample_id": "a1", "response_id": "x", "correct": True})
    assert r.status_code == 422 and "response_id or sample_id" in r.json()["error"]
    r = api.post("/v1/labels", json={"sample_id": "a1", "correct": True, "source": "oracle"})
    assert r.status_code == 422 and "source" in r.json()["error"]
    r = api.post("/v1/labels", json={"sample_id": "nope", "correct": True})
    assert r.status_code == 404 and "sample_id" in r.text


def test_write_auth_when_token_configured(engine, monkeypatch) -> None:
    monkeypatch.setenv("VLMWATCH_TEST_API_TOKEN", "s3cret")
    for c in serve_api(engine):
        body = {"samples": [_sample(1)]}
        assert c.post("/v1/samples", json=body).status_code == 401
        assert c.post("/v1/samples", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/labels", json={"sample_id": "a1", "correct": True}).status_code == 401
        r = c.post("/v1/samples", json=body, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["accepted"] == 1
        assert c.get("/v1/alerts").status_code == 200  # reads stay open
        assert c.get("/healthz").status_code == 200


def test_calibration_alerts_health_metrics_openapi(api: httpx.Client, engine) -> None:
    t0 = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
    with session_factory(engine)() as s:
        pv = ProbeVersion(model="m", version="v1", path="-", model_fingerprint="0" * 64, layer=2, pooling="last")
        s.add(pv)
        s.flush()
        for h in range(3):
            for source in ("human", "self_consistency"):
                s.add(CalibrationWindow(model="m", probe_version_id=pv.id, kind="time", source=source,
                                        window_start=t0 + timedelta(hours=h), window_end=t0 + timedelta(hours=h + 1),
                                        n=100 + h, partial=h == 0, auroc=0.9 - h / 10, ece=0.05, brier=0.1,
                                        agreement=0.8, mean_score=0.7, metrics={"auroc_ci": [0.8, 0.95]}))
        s.add(Alert(id="al1", fingerprint="f1", rule="probe_disagreement_drift", state="firing", severity="critical",
                    model="m", started_at=t0 + timedelta(hours=2)))
        s.add(Alert(id="al0", fingerprint="f0", rule="probe_score_shift", state="resolved", severity="info",
                    model="m", started_at=t0, resolved_at=t0 + timedelta(hours=1)))
        s.commit()
    rows = api.get("/v1/calibration", params={"model": "m", "source": "human"}).json()
    assert [r["n"] for r in rows] == [100, 101, 102]  # oldest first
    assert rows[1]["metrics"]["auroc_ci"] == [0.8, 0.95]
    rows = api.get("/v1/calibration", params={"since": (t0 + timedelta(hours=1, minutes=30)).isoformat(),
                                              "include_partial": "false"}).json()
    assert {(r["source"], r["n"]) for r in rows} == {("human", 102), ("self_consistency", 102),
                                                    ("human", 101), ("self_consistency", 101)}
    assert api.get("/v1/calibration", params={"limit": 0}).status_code == 422
    alerts = api.get("/v1/alerts").json()
    assert [a["id"] for a in alerts] == ["al1", "al0"]
    assert [a["id"] for a in api.get("/v1/alerts", params={"state": "firing"}).json()] == ["al1"]
    h = api.get("/healthz")
    assert h.status_code == 200 and h.json()["schema_ok"] is True
    api.post("/v1/samples", json={"samples": [_sample(1)]})
    m = api.get("/metrics")
    assert m.status_code == 200 and 'vlmwatch_api_samples_total{outcome="accepted"}' in m.text
    assert "vlmwatch_database_up 1.0" in m.text  # the database collector is part of every scrape
    assert 'vlmwatch_alert_deliveries{status="pending"} 0.0' in m.text
    spec = api.get("/openapi.json").json()
    assert {"/v1/samples", "/v1/labels", "/v1/calibration", "/v1/alerts", "/healthz", "/metrics"} <= set(spec["paths"])


def test_listen_parsing() -> None:
    assert parse_listen("127.0.0.1:8090") == ("127.0.0.1", 8090)
    assert parse_listen("[::1]:9") == ("::1", 9)
    with pytest.raises(ValueError, match="host:port"):
        parse_listen("8090")


def test_nul_bytes_are_stored_and_a_refused_record_comes_back_by_index(api: httpx.Client, engine) -> None:
    """One client's NUL byte used to fail the whole batch with a 500 on PostgreSQL."""
    from sqlalchemy import select

    from storage.models import Sample
    from tests.storage_refusal import refusing

    r = api.post("/v1/samples", json={"samples": [
        _sample(1, prompt="is there a\u0000dog?", meta={"note\u0000": "a\u0000b"}), _sample(2)]})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    with refusing(engine, "poison"):
        r = api.post("/v1/samples", json={"samples": [_sample(3), _sample(4, prompt="poison"), _sample(5)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 2 and [x["index"] for x in body["rejected"]] == [1]
    assert body["rejected"][0]["id"] == "a4" and "storage refused" in body["rejected"][0]["reason"]
    with engine.connect() as c:
        rows = dict(c.execute(select(Sample.id, Sample.prompt)).all())
        meta = c.execute(select(Sample.meta).where(Sample.id == "a1")).scalar_one()
    assert sorted(rows) == ["a1", "a2", "a3", "a5"]
    assert rows["a1"] == "is there a\ufffddog?" and meta == {"note\ufffd": "a\ufffdb"}


def test_a_labeller_can_ask_whether_a_response_was_sampled(api: httpx.Client) -> None:
    api.post("/v1/samples", json={"samples": [_sample(1, route="/chat/completions")]})
    api.post("/v1/labels", json={"sample_id": "a1", "correct": True, "source": "human"})
    r = api.get("/v1/samples", params={"response_id": "chatcmpl-a1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sampled"] is True and body["waiting_labels"] == 0
    (one,) = body["samples"]
    assert (one["id"], one["model"], one["route"], one["status"], one["labels"]) == (
        "a1", "m", "/chat/completions", "pending", ["human"])
    assert "prompt" not in one and "answer" not in one  # the lookup shows no content
    # a response that was not sampled (or is not shipped yet): its label would wait, and says so
    api.post("/v1/labels", json={"response_id": "chatcmpl-zz", "correct": False, "source": "human"})
    r = api.get("/v1/samples", params={"response_id": "chatcmpl-zz"})
    assert r.json() == {"response_id": "chatcmpl-zz", "sampled": False, "samples": [], "waiting_labels": 1}
    assert api.get("/v1/samples").status_code == 422  # response_id is required


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/v1/calibration", {"probe_version_id": str(2**70)}, "probe_version_id"),  # PostgreSQL: integer out of range
    ("/v1/calibration", {"probe_version_id": str(-2**70)}, "probe_version_id"),
    ("/v1/calibration", {"model": "a\u0000b"}, "model"),  # PostgreSQL: text cannot hold NUL
    ("/v1/alerts", {"rule": "a\u0000b"}, "rule"),
    ("/v1/samples", {"response_id": "chatcmpl-\u0000"}, "response_id"),  # PostgreSQL: text cannot hold NUL
    ("/v1/calibration", {"source": "a\u0000b"}, "source"),  # a Query() default must not drop the NUL check
    ("/v1/alerts", {"state": "a\u0000b"}, "state"),
    ("/v1/calibration", {"since": "9999-12-31T23:59:59-14:00"}, "since"),  # past year 9999 in UTC
    ("/v1/alerts", {"since": "0001-01-01T00:00:00+14:00"}, "since"),  # before year 1 in UTC
])
def test_query_values_storage_cannot_take_are_a_422_naming_them(api: httpx.Client, path, params, field) -> None:
    """Found by tests/robustness (schemathesis): each was a 500 on PostgreSQL or on both backends."""
    r = api.get(path, params=params)
    assert r.status_code == 422, r.text
    assert any(f.startswith(f"query.{field}: ") for f in r.json()["fields"]), r.json()


def test_sample_timestamps_past_year_9999_in_utc_are_refused(api: httpx.Client, engine) -> None:
    """Stored, such a ts could not be read back (year 10000 in UTC): every later read of the row failed."""
    from sqlalchemy import func, select

    from storage.models import Sample

    r = api.post("/v1/samples", json={"samples": [_sample(1, ts="9999-12-31T23:59:59-14:00"), _sample(2)]})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1 and r.json()["rejected"][0]["index"] == 0
    assert "ts" in r.json()["rejected"][0]["reason"]
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(Sample)).scalar_one() == 1
        assert c.execute(select(Sample.ts)).scalar_one().year == 2026


def test_calibration_shows_the_overall_series_unless_a_task_is_asked_for(api: httpx.Client, engine) -> None:
    t0 = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
    with session_factory(engine)() as s:
        pv = ProbeVersion(model="m", version="v1", path="-", model_fingerprint="0" * 64, layer=2, pooling="last")
        s.add(pv)
        s.flush()
        for task, n in (("", 300), ("describe", 120), ("yesno", 180)):
            s.add(CalibrationWindow(model="m", probe_version_id=pv.id, kind="time", source="human", task=task,
                                    window_start=t0, window_end=t0 + timedelta(hours=1), n=n, partial=False,
                                    metrics={}))
        s.commit()
    rows = api.get("/v1/calibration", params={"model": "m"}).json()
    assert [(r["task"], r["n"]) for r in rows] == [(None, 300)]
    rows = api.get("/v1/calibration", params={"model": "m", "task": "describe"}).json()
    assert [(r["task"], r["n"]) for r in rows] == [("describe", 120)]
    assert api.get("/v1/calibration", params={"task": "count"}).json() == []
    ok = api.post("/v1/samples", json={"samples": [_sample(7, task="describe"), _sample(8, task="bad task")]}).json()
    assert ok["accepted"] == 1 and "field 'task'" in ok["rejected"][0]["reason"]
    from storage.models import Sample

    with session_factory(engine)() as s:
        assert s.get(Sample, "a7").task == "describe"
