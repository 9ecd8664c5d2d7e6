"""A real vlmwatch Daemon with a deterministic scorer, run as a subprocess by the daemon tests.

usage: daemon_proc.py URL WORKDIR WORKER [--delay S] [--lease S] [--api-port P]
                      [--spotcheck-rate R --spotcheck-budget S]

Every sample the scorer scores is appended (unbuffered, O_APPEND: survives kill -9 up to the
last write) to WORKDIR/scored-WORKER.txt, so tests can prove who scored what. The scorer keeps
no state of its own: what counts is in the database.

With ``--spotcheck-rate`` the real spot-check job runs (the shipped tiny LLaVA as the model's
weights) and every decision it records (``sample drawn inclusion_prob``) and every run's
compute (``compute SECONDS``, checks whose result was discarded included) is appended to
WORKDIR/spotcheck-WORKER.txt.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.daemon.helpers import hash_score  # noqa: E402
from monitor.probe.score_result import ScoreResult  # noqa: E402


class HashScorer:
    def __init__(self, probe_version_id: int, log_path: Path, delay: float) -> None:
        self.probe_version_id = probe_version_id
        self.fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.delay = delay

    def score(self, items):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        os.write(self.fd, "".join(f"{it.sample_id}\n" for it in items).encode())
        return [ScoreResult(hash_score(it.sample_id), latency_ms=self.delay * 1000) for it in items]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("workdir", type=Path)
    ap.add_argument("worker")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--lease", type=float, default=300.0)
    ap.add_argument("--api-port", type=int, default=0)
    ap.add_argument("--shutdown-timeout", type=float, default=10.0)
    ap.add_argument("--webhook", default=None, help="alert channel 'hook' (webhook kind) at this URL")
    ap.add_argument("--stub-leader-jobs", action="store_true", help="replace calibrate/detect/deliver by no-ops")
    ap.add_argument("--spotcheck-rate", type=float, default=None, help="run the real spot-check job at this rate")
    ap.add_argument("--spotcheck-budget", type=float, default=600.0, help="spotcheck.gpu_seconds_per_hour")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {a.worker} %(levelname)s %(name)s: %(message)s")

    from sqlalchemy import select

    from monitor.commands.daemon import api_beside
    from monitor.config import Settings
    from monitor.daemon import Daemon
    from monitor.daemon.runner import JobResult
    from storage.db import make_engine, session_factory
    from storage.models import ProbeVersion

    from monitor.fixtures.registry import fixture_dir

    spot = a.spotcheck_rate is not None
    settings = Settings(
        storage={"url": a.url},
        models={"m": {"path": str(fixture_dir("tiny-llava")) if spot else "unused"}},
        spotcheck={"rate": a.spotcheck_rate if spot else 0.05, "gpu_seconds_per_hour": a.spotcheck_budget, "k": 4,
                   "max_new_tokens": 4, "max_candidates_per_run": 40,
                   "seconds_per_check_prior": 0.001},  # first runs select nearly all: the hard budget binds
        scoring={"batch_size": 8, "lease_seconds": a.lease},
        api={"listen": f"127.0.0.1:{a.api_port or 1}"},
        alerts={"channels": [{"name": "hook", "kind": "webhook", "url": a.webhook, "timeout_seconds": 2.0}]
                if a.webhook else []},
        daemon={
            "score_interval_seconds": 0.2, "spotcheck_interval_seconds": 0.2 if spot else 3600, "calibrate_interval_seconds": 0.5,
            "detect_interval_seconds": 0.5, "deliver_interval_seconds": 0.5, "report_interval_minutes": 600,
            "retention_interval_minutes": 600, "leader_check_seconds": 0.5, "job_time_budget_seconds": 30,
            "shutdown_timeout_seconds": a.shutdown_timeout,
        },
    )
    engine = make_engine(a.url)

    def factory(name, entry, settings, sessions):  # type: ignore[no-untyped-def]
        with session_factory(engine)() as s:
            pid = s.scalar(select(ProbeVersion.id).where(ProbeVersion.model == name, ProbeVersion.active.is_(True)))
        if pid is None:
            raise LookupError(f"no active probe for {name}")
        return HashScorer(int(pid), a.workdir / f"scored-{a.worker}.txt", a.delay)

    def noop(ctx):  # type: ignore[no-untyped-def]
        return JobResult()

    def logged_spotcheck(ctx):  # type: ignore[no-untyped-def]
        from monitor.spotcheck.job import run_spotcheck

        run = run_spotcheck(ctx.sessions, settings, budget=max(0.0, ctx.remaining()), worker=ctx.worker,
                            should_stop=ctx.should_stop)
        lines = [f"{sid} {int(drawn)} {pi!r}\n" for sid, drawn, pi in run.decisions]
        lines.append(f"compute {run.compute_seconds!r}\n")
        os.write(spot_fd, "".join(lines).encode())
        return JobResult(run.processed)

    if spot:
        spot_fd = os.open(a.workdir / f"spotcheck-{a.worker}.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    jobs = {"spotcheck": logged_spotcheck if spot else noop}
    if a.stub_leader_jobs:
        jobs.update(calibrate=noop, detect=noop, deliver=noop)
    daemon = Daemon(settings, engine=engine, worker_id=a.worker, scorer_factory=factory, jobs=jobs)
    rc = daemon.run(beside=api_beside(settings, daemon) if a.api_port else None)  # as `vlmwatch daemon` does
    if rc:
        os._exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
