"""The leader's jobs: thin adapters from the scheduler to each package's documented entry point.

Each entry point opens its own sessions, commits its own work and is idempotent (see
docs/CONTRACTS.md), so a run cut short by a crash or SIGTERM is simply run again.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.config import Settings
from monitor.daemon.runner import JobContext

__all__ = ["entry_point", "calibrate_job", "detect_job", "inputs_job", "deliver_job", "spotcheck_job", "ship_job", "report_job"]

logger = logging.getLogger(__name__)


def entry_point(module: str, name: str) -> Callable[..., Any]:
    """Import ``module.name``; raises ImportError naming what is missing."""
    mod = importlib.import_module(module)
    try:
        return getattr(mod, name)
    except AttributeError:
        raise ImportError(f"{module} has no {name}") from None


def _count(result: Any) -> int:
    if result is None:
        return 0
    if isinstance(result, int):
        return result
    if isinstance(result, (list, tuple)) and not hasattr(result, "_fields"):
        return len(result)
    for attr in ("processed", "alerts_changed", "sent", "checked", "n"):
        v = getattr(result, attr, None)
        if isinstance(v, int):
            return v
        if isinstance(v, (list, tuple)):
            return len(v)
    return 0


def calibrate_job(settings: Settings) -> Callable[[JobContext], int]:
    def run(ctx: JobContext) -> int:
        fn = entry_point("monitor.calibration.history", "run_calibrate")
        return _count(fn(ctx.sessions, settings))

    return run


def detect_job(settings: Settings) -> Callable[[JobContext], int]:
    def run(ctx: JobContext) -> int:
        fn = entry_point("monitor.detect", "run_detect")
        res = fn(ctx.sessions, settings)
        signals = getattr(res, "signals", None)
        return _count(signals) if signals is not None else _count(res)

    return run


def inputs_job(settings: Settings) -> Callable[[JobContext], int]:
    def run(ctx: JobContext) -> int:
        fn = entry_point("monitor.inputs", "run_input_drift")
        return _count(fn(ctx.sessions, settings))

    return run


def deliver_job(settings: Settings) -> Callable[[JobContext], int]:
    def run(ctx: JobContext) -> int:
        fn = entry_point("alerts.outbox", "deliver_due")
        res = fn(ctx.sessions, settings.alerts)
        return int(getattr(res, "sent", 0) or 0) + int(getattr(res, "gave_up", 0) or 0)

    return run


def spotcheck_job(
    settings: Settings, adapters: Callable[[], dict[str, Any] | None] = lambda: None
) -> Callable[[JobContext], int]:
    """``adapters()``: models already loaded by the score job (shared, so weights are in memory
    once), or None to let the spot-check load them itself."""

    def run(ctx: JobContext) -> int:
        fn = entry_point("monitor.spotcheck", "run_spotcheck")
        res = fn(ctx.sessions, settings, adapters=adapters(), budget=max(0.0, ctx.remaining()),
                 worker=ctx.worker, should_stop=ctx.should_stop)
        return _count(res)

    return run


def ship_job(settings: Settings, engine: Any) -> Callable[[JobContext], int]:
    """Drain the local spool into storage (when ``spool.collector_ships`` is false)."""
    shipper: Any = None

    def run(ctx: JobContext) -> int:
        nonlocal shipper
        if shipper is None:
            from collectors.shipper import Shipper
            from monitor import metrics

            shipper = Shipper(settings.spool.dir, settings.storage.url, engine=engine,
                              max_image_bytes=settings.storage.max_image_bytes)
            metrics.DEAD_LETTERS.watch(settings.spool.dir)  # on the daemon's /metrics
        return int(shipper.ship_once())

    return run


def report_job(settings: Settings) -> Callable[[JobContext], int]:
    def run(ctx: JobContext) -> int:
        from monitor.report import build_report

        out = Path(settings.daemon.report_dir)
        summary = build_report(ctx.sessions, settings, since=settings.daemon.report_since, out_dir=out)
        logger.info("report written to %s", out)
        return int(summary.get("samples", 0))

    return run
