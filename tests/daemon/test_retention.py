"""The retention job: labels whose sample never arrived expire after storage.unjoined_label_ttl_hours."""

from __future__ import annotations

import threading
from datetime import timedelta

from prometheus_client import REGISTRY
from sqlalchemy import select, update

from monitor.config import Settings
from monitor.daemon.retention import RetentionJob
from monitor.daemon.runner import JobContext
from storage.db import session_factory
from storage.models import Label, utcnow
from storage.records import LabelRecord, SampleRecord
from storage.repo_labels import add_labels
from storage.repo_samples import ingest_samples
from storage.repo_status import status_report


def _expired_total() -> float:
    return REGISTRY.get_sample_value("vlmwatch_labels_expired_total") or 0.0


def _run(settings: Settings, engine) -> int:
    ctx = JobContext("retention", "w", session_factory(engine), 60.0, threading.Event())
    return RetentionJob(settings)(ctx).processed


def _labels(engine) -> list[tuple]:
    with session_factory(engine)() as s:
        return [tuple(r) for r in s.execute(select(Label.response_id, Label.sample_id).order_by(Label.response_id))]


def test_unjoined_labels_expire_are_counted_and_joined_ones_stay(engine) -> None:
    settings = Settings(storage={"url": str(engine.url), "unjoined_label_ttl_hours": 24})
    f = session_factory(engine)
    with f.begin() as s:
        ingest_samples(s, [SampleRecord(id="s1", model="m", prompt="p", answer="a", response_id="r-joined")])
        add_labels(s, [LabelRecord(correct=True, response_id=r) for r in ("r-joined", "r-never-1", "r-never-2", "r-young")])
    with f.begin() as s:  # three of them arrived two days ago; one was joined, two never were
        s.execute(update(Label).where(Label.response_id != "r-young").values(created_at=utcnow() - timedelta(hours=48)))
        assert status_report(s)["pending"]["labels_waiting_for_sample"] == 3
    before = _expired_total()
    assert _run(settings, engine) >= 2
    assert _labels(engine) == [("r-joined", "s1"), ("r-young", None)]
    assert _expired_total() == before + 2
    with f() as s:
        report = status_report(s)
    assert report["pending"]["labels_waiting_for_sample"] == 1
    assert report["totals"] == {"labels_expired_unjoined": 2}
    _run(settings, engine)  # nothing more is due: nothing deleted, nothing counted twice
    assert _expired_total() == before + 2 and len(_labels(engine)) == 2
    with f() as s:
        assert status_report(s)["totals"] == {"labels_expired_unjoined": 2}


def test_a_ttl_of_zero_keeps_waiting_labels(engine) -> None:
    settings = Settings(storage={"url": str(engine.url), "unjoined_label_ttl_hours": 0})
    with session_factory(engine).begin() as s:
        add_labels(s, [LabelRecord(correct=True, response_id="r-old")])
        s.execute(update(Label).values(created_at=utcnow() - timedelta(days=30)))
    _run(settings, engine)
    assert _labels(engine) == [("r-old", None)]
