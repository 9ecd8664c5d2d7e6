"""Running one daemon job: time budget, stop flag, failure counting, ``job_runs`` rows.

A job is a callable ``job(ctx) -> JobResult`` (items processed, and an optional detail for the
debug log). It must check ``ctx.should_stop()`` between units of work (a batch of samples, a
model) and return when it is true; that is how the per-run time budget and SIGTERM reach it. A
job that raises is counted, logged and recorded; the scheduler keeps running it at its next interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from monitor import metrics
from storage.failopen import report_internal_error
from storage.models import JobRun, utcnow

__all__ = ["JobContext", "JobResult", "Job", "JobRunner"]

logger = logging.getLogger(__name__)


@dataclass
class JobContext:
    """What a job run sees: its deadline, the daemon's stop flag, its worker id and sessions."""

    name: str
    worker: str
    sessions: sessionmaker[Session]
    budget_seconds: float
    stopping: threading.Event
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def remaining(self) -> float:
        return self.budget_seconds - (self.clock() - self.started)

    def should_stop(self) -> bool:
        """True once the daemon is stopping or this run used its time budget."""
        return self.stopping.is_set() or self.remaining() <= 0


@dataclass(frozen=True)
class JobResult:
    """What one run did: ``processed`` items (``vlmwatch_job_processed_total``, ``job_runs.processed``)
    and an optional one-line ``detail`` for the debug log line of the run."""

    processed: int = 0
    detail: str | None = None


Job = Callable[[JobContext], JobResult]


class JobRunner:
    """Wraps a job for the scheduler; counts in-flight runs so shutdown can wait for them."""

    def __init__(
        self,
        name: str,
        job: Job,
        *,
        worker: str,
        sessions: sessionmaker[Session],
        budget_seconds: float,
        stopping: threading.Event,
        enabled: Callable[[], bool] = lambda: True,
        record: bool = True,
    ) -> None:
        self.name = name
        self.job = job
        self.worker = worker
        self.sessions = sessions
        self.budget_seconds = budget_seconds
        self.stopping = stopping
        self.enabled = enabled
        self.record = record
        self.running = threading.Event()
        self.last_error: str | None = None
        self.runs = 0
        self.failures = 0
        for outcome in ("ok", "error"):  # zeros, so rate() and alerts see every job before its first failure
            metrics.JOB_RUNS.labels(name, outcome)
        metrics.JOB_FAILURES.labels(name)
        metrics.JOB_OVERRUNS.labels(name)

    def __call__(self) -> JobResult | None:
        if self.stopping.is_set() or not self.enabled():
            return None
        self.running.set()
        ctx = JobContext(self.name, self.worker, self.sessions, self.budget_seconds, self.stopping)
        run_id = self._record_start()
        t0 = time.monotonic()
        result = JobResult()
        error: str | None = None
        try:
            result = self.job(ctx)
        except Exception as e:  # the loop survives its own errors: counted, logged, recorded
            error = f"{type(e).__name__}: {e}"
            self.failures += 1
            metrics.JOB_FAILURES.labels(self.name).inc()
            logger.exception("job %s failed (worker %s)", self.name, self.worker)
        finally:
            elapsed = time.monotonic() - t0
            self.runs += 1
            self.last_error = error
            metrics.JOB_RUNS.labels(self.name, "error" if error else "ok").inc()
            metrics.JOB_DURATION.labels(self.name).observe(elapsed)
            metrics.JOB_PROCESSED.labels(self.name).inc(result.processed)
            if elapsed > self.budget_seconds * 1.5:
                metrics.JOB_OVERRUNS.labels(self.name).inc()
                logger.warning("job %s took %.1fs, over its %.0fs budget", self.name, elapsed, self.budget_seconds)
            self._record_end(run_id, result.processed, error)
            self.running.clear()
        if result.processed:
            logger.debug("job %s processed %d in %.2fs%s", self.name, result.processed, elapsed,
                         f" ({result.detail})" if result.detail else "")
        return result

    def _record_start(self) -> int | None:
        if not self.record:
            return None
        try:
            with self.sessions() as s:
                row = JobRun(job=self.name, worker=self.worker, started_at=utcnow())
                s.add(row)
                s.commit()
                return int(row.id)
        except Exception as e:
            report_internal_error(logger, f"recording start of job {self.name}", e)
            return None

    def _record_end(self, run_id: int | None, processed: int, error: str | None) -> None:
        if run_id is None:
            return
        values: dict[str, Any] = {"finished_at": utcnow(), "ok": error is None, "processed": processed, "error": error}
        try:
            with self.sessions() as s:
                s.execute(update(JobRun).where(JobRun.id == run_id).values(**values))
                s.commit()
        except Exception as e:
            report_internal_error(logger, f"recording end of job {self.name}", e)
