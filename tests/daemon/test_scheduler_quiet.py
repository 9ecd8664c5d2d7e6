"""A job still running at its next interval (the first score run loading the model) is skipped
without APScheduler's warning every interval."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

import monitor.daemon.service  # noqa: F401  (installs the filter, as the daemon does)


def test_skipped_runs_of_a_long_job_do_not_warn(caplog):
    done = threading.Event()
    runs = []

    def slow_first_run():
        runs.append(time.monotonic())
        if len(runs) == 1:
            time.sleep(1.2)  # "loading the model"
        done.set()

    sched = BackgroundScheduler(job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
                                timezone=timezone.utc)
    sched.add_job(slow_first_run, IntervalTrigger(seconds=0.2), id="score")
    with caplog.at_level(logging.DEBUG, logger="apscheduler"):
        sched.start()
        try:
            time.sleep(1.8)
        finally:
            sched.shutdown(wait=True)
    assert len(runs) >= 2  # it ran again after the long run: skipping happened, nothing got stuck
    skipped = [r for r in caplog.records if "maximum number of running instances" in r.getMessage()]
    assert skipped == []
    assert not [r for r in caplog.records if r.name.startswith("apscheduler") and r.levelno >= logging.WARNING]
