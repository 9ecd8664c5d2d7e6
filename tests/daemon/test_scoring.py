"""The score job: poison batches end up failed, stale probes leave samples pending, probe changes reload."""

from __future__ import annotations

import threading

from sqlalchemy import select, update

from alerts.rules import PROBE_STALE
from monitor.config import Settings
from monitor.daemon.runner import JobContext
from monitor.daemon.scoring import ScoreJob
from monitor.probe.score_result import ScoreResult
from monitor.probe.stale import ProbeStaleError
from storage.db import session_factory
from storage.models import Alert, ProbeVersion, Sample, Score
from tests.daemon.helpers import add_probe_version, ingest


class _Scorer:
    def __init__(self, pid: int, behaviour: str) -> None:
        self.probe_version_id = pid
        self.behaviour = behaviour
        self.calls = 0

    def score(self, items):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.behaviour == "boom":
            raise ValueError("cannot decode")
        if self.behaviour == "stale":
            raise ProbeStaleError("m", "v1", "a" * 64, "b" * 64)  # the weights changed after the load
        return [ScoreResult(0.7) for _ in items]


def _ctx(engine) -> JobContext:
    return JobContext("score", "w", session_factory(engine), 30.0, threading.Event())


def test_poison_stale_and_probe_change(db_url: str, engine) -> None:
    pid = add_probe_version(db_url)
    ingest(db_url, 5, images=False)
    settings = Settings(storage={"url": db_url}, models={"m": {"path": "-"}}, daemon={"max_attempts": 3})
    behaviour = {"now": "boom"}
    made: list[_Scorer] = []

    def factory(name, entry, settings, sessions):  # type: ignore[no-untyped-def]
        with sessions() as s:
            active = s.scalar(select(ProbeVersion.id).where(ProbeVersion.model == name, ProbeVersion.active.is_(True)))
        if behaviour["now"] == "stale" and made and made[-1].behaviour == "stale":
            raise ProbeStaleError(name, "v1", "a" * 64, "b" * 64)  # the load checks the weights too
        made.append(_Scorer(int(active), behaviour["now"]))
        return made[-1]

    job = ScoreJob(settings, factory, max_attempts=3)
    sessions = session_factory(engine)
    for _ in range(3):  # a poison batch: recorded, retried, given up after max_attempts claims
        assert job(_ctx(engine)).processed == 0
    with sessions() as s:
        rows = list(s.scalars(select(Sample)))
    assert {r.status for r in rows} == {"failed"} and all("cannot decode" in (r.error or "") for r in rows)

    ingest(db_url, 4, start=100, images=False)
    behaviour["now"] = "stale"
    job.forget("m")
    for _ in range(3):  # stale: not the samples' fault; attempts are not used up
        job(_ctx(engine))
        job._load_errors.clear()
    with sessions() as s:
        fresh = list(s.scalars(select(Sample).where(Sample.id >= "s00100")))
    assert {r.status for r in fresh} == {"pending"} and {r.attempts for r in fresh} == {0}
    assert all(r.lease_owner is None for r in fresh)
    with sessions() as s:  # the score job turned the error into one probe_stale alert
        stale = list(s.scalars(select(Alert).where(Alert.rule == PROBE_STALE.name)))
    assert [(a.state, a.model, a.probe_version, a.severity) for a in stale] == [("firing", "m", "v1", "critical")]

    behaviour["now"] = "ok"
    assert job(_ctx(engine)).processed == 4
    with sessions() as s:
        assert s.get(Alert, stale[0].id).state == "resolved"  # the next load with a matching probe
        assert {sc.probe_version_id for sc in s.scalars(select(Score))} == {pid}
        # a new probe version is activated: the job notices and reloads
        s.execute(update(ProbeVersion).values(active=False))
        s.add(ProbeVersion(model="m", version="v2", path="-", model_fingerprint="0" * 64, layer=1, pooling="last",
                           active=True))
        s.commit()
    ingest(db_url, 2, start=200, images=False)
    job._probe_checked = 0.0
    assert job(_ctx(engine)).processed == 2
    assert made[-1].probe_version_id != pid
    with sessions() as s:
        new = set(s.scalars(select(Score.probe_version_id).where(Score.sample_id >= "s00200")))
    assert new == {made[-1].probe_version_id}
