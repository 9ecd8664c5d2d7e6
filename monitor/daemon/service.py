"""The daemon: an APScheduler 3.x scheduler over the jobs, leadership, and shutdown.

Every daemon runs the *workers* (score, spotcheck, and ship when ``spool.collector_ships`` is false), which claim rows with leases and can run in
any number of processes on PostgreSQL. Only the *scheduler leader* runs calibrate, detect,
inputs, deliver, report and retention; leadership is re-checked every ``daemon.leader_check_seconds``
(a non-leader takes over when the leader's advisory lock is released). With SQLite, one daemon
per database: a second one stops at :meth:`Daemon.start` with :class:`DaemonAlreadyRunning`.

Shutdown (SIGTERM / SIGINT / :meth:`Daemon.request_stop`): no new runs start, running jobs see
``ctx.should_stop()`` and return after their current batch; what they still hold is released
(leases of unfinished samples); the outbox is flushed once; everything is done within
``daemon.shutdown_timeout_seconds``. Whatever was not finished is picked up by the next daemon.

A :class:`Companion` runs beside the jobs when :meth:`Daemon.start` is given one: ``vlmwatch
daemon`` (:mod:`monitor.commands.daemon`) serves the HTTP API so; the daemon itself knows nothing
of the API.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from types import FrameType
from typing import Any, Protocol

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from monitor import metrics
from monitor.config import ModelEntry, Settings
from monitor.daemon import jobs as daemon_jobs
from monitor.daemon.leases import release_all_leases, release_leases
from monitor.daemon.locks import LeaderLock, SqliteDaemonLock
from monitor.daemon.retention import RetentionJob
from monitor.daemon.runner import Job, JobContext, JobRunner
from monitor.daemon.scoring import Scorer, ScoreJob, ScorerFactory

__all__ = ["Daemon", "Companion", "WORKER_JOBS", "LEADER_JOBS", "default_worker_id"]

logger = logging.getLogger(__name__)
# APScheduler logs every run at INFO; our JobRunner logs what matters (failures, overruns)
logging.getLogger("apscheduler").setLevel(logging.WARNING)


class _SkippedRunFilter(logging.Filter):
    """Drop APScheduler's "skipped: maximum number of running instances reached" warning.

    A job never overlaps itself by design (``max_instances=1, coalesce=True``): while a long run
    goes on (the first score run loads the model, which takes a while on a big one) its next
    intervals are skipped, which is not a problem to warn about every few seconds. A run that
    overstays ``daemon.job_time_budget_seconds`` is still logged and counted by the JobRunner.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


logging.getLogger("apscheduler.scheduler").addFilter(_SkippedRunFilter())

WORKER_JOBS = ("ship", "score", "spotcheck")
LEADER_JOBS = ("calibrate", "detect", "inputs", "deliver", "report", "retention")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _probe_scorer(name: str, entry: ModelEntry, settings: Settings, sessions: sessionmaker[Session]) -> Scorer:
    """Default scorer factory: :func:`monitor.probe.factory.make_scorer`, the model's probe on its
    adapter (the model side is imported on first use, not with the daemon)."""
    from monitor.probe.factory import make_scorer

    return make_scorer(name, entry, settings, sessions)


class Companion(Protocol):
    """A service run beside the jobs, in threads of its own (the HTTP API, :mod:`monitor.commands.daemon`)."""

    def start(self) -> None:
        """Start serving; return at once."""
        ...

    def stop(self, timeout: float) -> None:
        """Stop serving, waiting at most ``timeout`` seconds."""
        ...


class Daemon:
    """One daemon process. ``jobs`` overrides job callables by name (tests, the demo)."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        worker_id: str | None = None,
        scorer_factory: ScorerFactory | None = None,
        jobs: dict[str, Job] | None = None,
    ) -> None:
        from storage.db import engine_for, session_factory

        self.settings = settings
        self.engine = engine or engine_for(settings.storage)
        self.sessions = session_factory(self.engine)
        self.worker = worker_id or default_worker_id()
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.file_lock = SqliteDaemonLock(str(self.engine.url)) if self.is_sqlite else None
        self.leader = LeaderLock(self.engine)
        self.companion: Companion | None = None
        self.scheduler: BackgroundScheduler | None = None
        self.score_job = ScoreJob(settings, scorer_factory or _probe_scorer, max_attempts=settings.daemon.max_attempts)
        d = settings.daemon
        table: dict[str, tuple[Job, float]] = {
            "score": (self.score_job, d.score_interval_seconds),
            "spotcheck": (partial(daemon_jobs.spotcheck, settings, self.score_job.adapters), d.spotcheck_interval_seconds),
            "calibrate": (partial(daemon_jobs.calibrate, settings), d.calibrate_interval_seconds),
            "detect": (partial(daemon_jobs.detect, settings), d.detect_interval_seconds),
            "inputs": (partial(daemon_jobs.inputs, settings), d.inputs_interval_seconds),
            "deliver": (partial(daemon_jobs.deliver, settings), d.deliver_interval_seconds),
            "report": (partial(daemon_jobs.report, settings), d.report_interval_minutes * 60),
            "retention": (RetentionJob(settings), d.retention_interval_minutes * 60),
        }
        if not settings.spool.collector_ships:
            table["ship"] = (daemon_jobs.ShipJob(settings, self.engine), settings.spool.ship_interval_seconds)
        for name, fn in (jobs or {}).items():
            if name not in table:
                raise ValueError(f"unknown daemon job {name!r}; known: {', '.join(table)}")
            table[name] = (fn, table[name][1])
        self.runners: dict[str, JobRunner] = {}
        self.intervals: dict[str, float] = {}
        for name, (fn, interval) in table.items():
            enabled: Callable[[], bool] = (lambda: True) if name in WORKER_JOBS else (lambda: self.leader.is_leader)
            self.runners[name] = JobRunner(
                name, fn, worker=self.worker, sessions=self.sessions, budget_seconds=d.job_time_budget_seconds,
                stopping=self.stopping, enabled=enabled,
            )
            self.intervals[name] = interval

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, beside: Callable[[], Companion] | None = None) -> None:
        """Check the schema, take the locks, start the scheduler (and ``beside()``). Raises on refusal.

        ``beside`` builds the companion after the schema check and before any lock, so one that
        refuses its config (the API's open writes on a public address) stops the daemon there; it is
        started with the scheduler and stopped once the leases are released.
        """
        from storage.db import require_schema

        require_schema(self.engine)
        if beside is not None:
            self.companion = beside()
        if self.file_lock is not None:
            self.file_lock.acquire()
            with self.sessions() as s:  # we are the only daemon: leases of a killed one return now
                n = release_all_leases(s)
            if n:
                logger.info("took back %d sample leases left by a previous daemon", n)
        self._check_leader()
        now = datetime.now(timezone.utc)
        sched = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=len(self.runners) + 1)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone=timezone.utc,
        )
        for name, runner in self.runners.items():
            # the report is the one heavy job: first one after its interval, not at every start
            first = now + timedelta(seconds=self.intervals[name]) if name == "report" else now
            sched.add_job(runner, IntervalTrigger(seconds=self.intervals[name]), id=name, name=name, next_run_time=first)
        sched.add_job(self._check_leader, IntervalTrigger(seconds=self.settings.daemon.leader_check_seconds), id="leader")
        self.scheduler = sched
        if self.companion is not None:
            self.companion.start()
        sched.start()
        logger.info(
            "daemon %s started (%s, %s)", self.worker, self.engine.dialect.name,
            "scheduler leader" if self.leader.is_leader else "worker only",
        )

    def _check_leader(self) -> None:
        was = self.leader.is_leader
        now_leader = self.leader.try_acquire() if not self.stopping.is_set() else was
        metrics.IS_LEADER.set(1 if now_leader else 0)
        if now_leader and not was:
            logger.info("daemon %s took scheduler leadership", self.worker)

    def request_stop(self, *_: Any) -> None:
        if not self.stopping.is_set():
            logger.info("daemon %s stopping", self.worker)
        self.stopping.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.stopping.wait(timeout)

    def stop(self) -> bool:
        """Shut down within ``daemon.shutdown_timeout_seconds``. True when every job finished."""
        self.request_stop()
        deadline = time.monotonic() + self.settings.daemon.shutdown_timeout_seconds
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        # leave a slice of the budget for the flush and the lease release
        wait_until = deadline - min(5.0, self.settings.daemon.shutdown_timeout_seconds * 0.3)
        clean = True
        for name, runner in self.runners.items():
            while runner.running.is_set() and time.monotonic() < wait_until:
                time.sleep(0.05)
            if runner.running.is_set():
                clean = False
                logger.warning("job %s still running at shutdown: abandoned (its leases expire)", name)
        if self.leader.is_leader and not self.runners["deliver"].running.is_set():
            self._flush_outbox(deadline)
        try:
            with self.sessions() as s:
                n = release_leases(s, self.worker)
            if n:
                logger.info("released %d unfinished sample leases", n)
        except Exception as e:
            logger.warning("could not release leases (they will expire): %s", e)
        if self.companion is not None:
            self.companion.stop(timeout=max(0.1, deadline - time.monotonic()))
        self.leader.release()
        self.score_job.close()
        if self.file_lock is not None:
            self.file_lock.release()
        metrics.IS_LEADER.set(0)
        self.stopped.set()
        logger.info("daemon %s stopped (%s)", self.worker, "clean" if clean else "jobs abandoned")
        return clean

    def _flush_outbox(self, deadline: float) -> None:
        runner = self.runners["deliver"]
        budget = max(0.5, deadline - time.monotonic() - 0.5)
        ctx = JobContext("deliver", self.worker, self.sessions, budget, threading.Event())
        try:
            n = runner.job(ctx).processed
            logger.info("outbox flushed at shutdown (%d delivered)", n)
        except Exception as e:
            logger.warning("outbox flush at shutdown failed (deliveries stay queued): %s", e)

    def run(self, beside: Callable[[], Companion] | None = None) -> int:
        """Start (with ``beside``, as :meth:`start`), block until SIGTERM/SIGINT, stop. Returns the process exit status."""
        prev: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                prev[sig] = signal.signal(sig, self._on_signal)
        try:
            self.start(beside)
            while not self.stopping.wait(1.0):
                pass
            return 0 if self.stop() else 1
        finally:
            for sig, handler in prev.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping.is_set() and signum == signal.SIGINT:
            logger.warning("second interrupt: exiting now")
            os._exit(130)
        logger.info("received %s", signal.Signals(signum).name)
        self.request_stop()

    def status(self) -> dict[str, Any]:
        """For /healthz: who we are and how the jobs are doing."""
        return {
            "worker": self.worker,
            "leader": self.leader.is_leader,
            "stopping": self.stopping.is_set(),
            "jobs": {
                n: {"runs": r.runs, "failures": r.failures, "last_error": r.last_error, "running": r.running.is_set()}
                for n, r in self.runners.items()
            },
        }
