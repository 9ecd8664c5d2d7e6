"""Job running: time budget, stop flag, failures counted and recorded, no overlap, loop survives."""

from __future__ import annotations

import threading
import time

from prometheus_client import REGISTRY
from sqlalchemy import select

from monitor.config import Settings
from monitor.daemon import Daemon
from monitor.daemon.runner import JobContext, JobResult, JobRunner
from storage.db import session_factory
from storage.models import JobRun


def _failures(job: str) -> float:
    return REGISTRY.get_sample_value("vlmwatch_job_failures_total", {"daemon_job": job}) or 0.0


def test_runner_budget_failure_and_record(engine) -> None:
    sessions = session_factory(engine)
    stopping = threading.Event()

    def loop(ctx: JobContext) -> JobResult:
        n = 0
        while not ctx.should_stop():
            n += 1
            time.sleep(0.01)
        return JobResult(n)

    r = JobRunner("t-budget", loop, worker="w", sessions=sessions, budget_seconds=0.3, stopping=stopping)
    t0 = time.monotonic()
    assert r().processed > 5
    assert 0.25 < time.monotonic() - t0 < 2.0

    def boom(ctx: JobContext) -> JobResult:
        raise RuntimeError("disk on fire")

    before = _failures("t-boom")
    f = JobRunner("t-boom", boom, worker="w", sessions=sessions, budget_seconds=5, stopping=stopping)
    assert f() == JobResult(0) and f() == JobResult(0)  # swallowed, counted, and it can run again
    assert f.failures == 2 and "disk on fire" in (f.last_error or "")
    assert _failures("t-boom") == before + 2
    with sessions() as s:
        runs = list(s.scalars(select(JobRun).order_by(JobRun.id)))
    assert [(x.job, x.ok) for x in runs] == [("t-budget", True), ("t-boom", False), ("t-boom", False)]
    assert runs[0].processed > 5 and runs[0].finished_at is not None
    assert "disk on fire" in (runs[1].error or "")
    stopping.set()  # a stopping daemon starts no run
    assert r() is None


def test_daemon_jobs_never_overlap_and_survive_errors(db_url: str, engine) -> None:
    active = 0
    peak = 0
    runs = 0
    lock = threading.Lock()

    def slow(ctx: JobContext) -> JobResult:
        nonlocal active, peak, runs
        with lock:
            active += 1
            peak = max(peak, active)
            runs += 1
        time.sleep(0.3)
        with lock:
            active -= 1
        return JobResult(1)

    def flaky(ctx: JobContext) -> JobResult:
        raise ValueError("flaky")

    def noop(ctx: JobContext) -> JobResult:
        return JobResult()

    settings = Settings(storage={"url": db_url}, daemon={
        "score_interval_seconds": 0.05, "calibrate_interval_seconds": 0.05, "leader_check_seconds": 0.2,
        "detect_interval_seconds": 60, "deliver_interval_seconds": 60, "spotcheck_interval_seconds": 60,
        "shutdown_timeout_seconds": 5})
    d = Daemon(settings, engine=engine, jobs={"score": slow, "calibrate": flaky, "spotcheck": noop, "detect": noop,
                                               "deliver": noop, "retention": noop, "report": noop})
    d.start()
    try:
        time.sleep(2.0)
        assert d.runners["calibrate"].failures >= 3  # it failed, and kept being scheduled
        assert d.status()["jobs"]["calibrate"]["last_error"] == "ValueError: flaky"
    finally:
        t0 = time.monotonic()
        assert d.stop() is True
        assert time.monotonic() - t0 < 5
    assert peak == 1 and runs >= 3  # max_instances=1: a slow job never runs twice at once
    with session_factory(engine)() as s:
        oks = [r.ok for r in s.scalars(select(JobRun).where(JobRun.job == "calibrate"))]
    assert oks and not any(oks)


def test_ship_job_dead_letters_what_storage_refuses_and_counts_it_on_metrics(tmp_path, engine) -> None:
    from datetime import datetime, timezone

    from collectors.sample import CollectedImage, CollectedSample
    from collectors.spool import SpoolWriter
    from monitor.daemon.jobs import ShipJob
    from storage.models import Sample

    def smp(sid: str) -> bytes:
        return CollectedSample(id=sid, source="sdk", ts=datetime(2026, 1, 1, tzinfo=timezone.utc), model="m",
                               route="/v1/chat/completions", prompt="p", answer="a",
                               image=CollectedImage(url="https://img.example/1.png")).to_bytes()

    lane = f"sdk-job-{tmp_path.name}"[:100]
    w = SpoolWriter(tmp_path / "spool", lane, max_bytes=1_000_000)
    w.append([smp("ok-1"), smp("i" * 129), smp("ok-2")])
    w.close()
    settings = Settings(storage={"url": str(engine.url)}, spool={"dir": str(tmp_path / "spool"), "collector_ships": False})
    ctx = JobContext("ship", "w", session_factory(engine), 30.0, threading.Event())
    assert ShipJob(settings, engine)(ctx) == JobResult(3)
    with session_factory(engine)() as s:
        assert sorted(s.scalars(select(Sample.id))) == ["ok-1", "ok-2"]
    assert REGISTRY.get_sample_value("vlmwatch_spool_dead_letters_total", {"lane": lane}) == 1.0
