"""Two daemon processes on one real PostgreSQL database: shared work, no double scoring, one leader."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.daemon.helpers import (
    add_probe_version,
    count,
    ingest,
    postgres_db,
    rows,
    running_daemons,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
N = 320


def _leaders(url: str, job: str = "calibrate") -> set[str]:
    return {w for (w,) in rows(url, f"SELECT DISTINCT worker FROM job_runs WHERE job = '{job}'")}


def test_two_daemons_share_work_without_double_scoring_and_one_leads(tmp_path: Path, pg_server: str) -> None:
    with postgres_db() as url:
        add_probe_version(url)
        assert len(ingest(url, N)) == N
        with running_daemons(url, tmp_path, ("alpha", "beta"), delay=0.1) as procs:
            wait_for(lambda: count(url, "SELECT COUNT(*) FROM samples WHERE status='scored'") == N, 120,
                     "all samples scored")
            wait_for(lambda: _leaders(url), 30, "a leader job run")
            assert all(p.poll() is None for p in procs.values())
            # exactly one score per sample, and no sample was scored by both daemons
            assert count(url, "SELECT COUNT(*) FROM scores") == N
            assert count(url, "SELECT COUNT(DISTINCT sample_id) FROM scores") == N
            done = {w: set((tmp_path / f"scored-{w}.txt").read_text().split()) for w in procs}
            assert done["alpha"].isdisjoint(done["beta"])
            assert done["alpha"] | done["beta"] == {f"s{i:05d}" for i in range(N)}
            assert min(len(v) for v in done.values()) >= N // 10, {w: len(v) for w, v in done.items()}
            # exactly one scheduler leader ran the leader jobs; the other ran workers only
            leaders = _leaders(url)
            assert len(leaders) == 1, leaders
            for job in ("detect", "deliver"):
                assert _leaders(url, job) == leaders
            assert {w for (w,) in rows(url, "SELECT DISTINCT worker FROM job_runs WHERE job='score'")} == set(procs)
            leader = leaders.pop()
            follower = next(w for w in procs if w != leader)
            # the leader dies without a word: the other takes over the leader jobs
            procs[leader].send_signal(signal.SIGKILL)
            procs[leader].wait(10)
            wait_for(lambda: follower in _leaders(url), 30, "the follower taking leadership")
            # and it keeps scoring new work alone
            ingest(url, 40, start=N)
            wait_for(lambda: count(url, "SELECT COUNT(*) FROM scores") == N + 40, 60, "new samples scored")
            assert count(url, "SELECT COUNT(DISTINCT sample_id) FROM scores") == N + 40
