"""The daemon's jobs other than score and retention: thin adapters from the scheduler to each
package's documented entry point, each turning its typed result into a :class:`JobResult`.

Each entry point opens its own sessions, commits its own work and is idempotent (see
docs/CONTRACTS.md), so a run cut short by a crash or SIGTERM is simply run again. The daemon binds
``settings`` (``functools.partial(calibrate, settings)``) to make a :data:`~monitor.daemon.runner.Job`.
The statistics and report packages are imported inside their job, on its first run (scipy,
river, pandas load there, not with :mod:`monitor.daemon`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from alerts.outbox import deliver_due
from collectors.shipper import Shipper
from monitor import metrics
from monitor.config import Settings
from monitor.daemon.runner import JobContext, JobResult

__all__ = ["calibrate", "detect", "inputs", "deliver", "spotcheck", "report", "ShipJob"]

logger = logging.getLogger(__name__)


def calibrate(settings: Settings, ctx: JobContext) -> JobResult:
    from monitor.calibration.history import run_calibrate

    return JobResult(run_calibrate(ctx.sessions, settings))  # calibration windows written


def detect(settings: Settings, ctx: JobContext) -> JobResult:
    from monitor.detect.runner import run_detect

    res = run_detect(ctx.sessions, settings)
    return JobResult(len(res.signals), detail=f"{res.alerts_changed} alert transitions")


def inputs(settings: Settings, ctx: JobContext) -> JobResult:
    from monitor.inputs.job import run_input_drift

    run = run_input_drift(ctx.sessions, settings)
    return JobResult(run.windows, detail=f"{len(run.references)} references created" if run.references else None)


def deliver(settings: Settings, ctx: JobContext) -> JobResult:
    stats = deliver_due(ctx.sessions, settings.alerts)
    return JobResult(stats.sent + stats.gave_up, detail=f"{stats.sent} sent, {stats.gave_up} given up, "
                                                        f"{stats.retried} to retry")


def spotcheck(settings: Settings, adapters: Callable[[], Mapping[str, Any] | None], ctx: JobContext) -> JobResult:
    """``adapters()``: models already loaded by the score job (shared, so weights are in memory
    once), or None to let the spot-check load them itself."""
    from monitor.spotcheck.job import run_spotcheck

    run = run_spotcheck(ctx.sessions, settings, adapters=adapters(), budget=max(0.0, ctx.remaining()),
                        worker=ctx.worker, should_stop=ctx.should_stop)
    return JobResult(run.processed, detail=f"stopped: {run.stopped}" if run.stopped else None)


def report(settings: Settings, ctx: JobContext) -> JobResult:
    from monitor.report import build_report

    out = Path(settings.daemon.report_dir)
    summary = build_report(ctx.sessions, settings, since=settings.daemon.report_since, out_dir=out)
    logger.info("report written to %s", out)
    return JobResult(int(summary.get("samples", 0)))


class ShipJob:
    """Drain the local spool into storage (when ``spool.collector_ships`` is false)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.shipper: Shipper | None = None  # made on the first run

    def __call__(self, ctx: JobContext) -> JobResult:
        if self.shipper is None:
            cfg = self.settings
            self.shipper = Shipper(cfg.spool.dir, cfg.storage.url, engine=self.engine,
                                   max_image_bytes=cfg.storage.max_image_bytes, tasks=cfg.task_rules())
            metrics.DEAD_LETTERS.watch(cfg.spool.dir)  # on the daemon's /metrics
        return JobResult(self.shipper.ship_once())  # spool records handled
