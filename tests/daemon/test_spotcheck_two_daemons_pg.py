"""Spot checks in two daemon processes on one real PostgreSQL database: each candidate is decided
by one draw (so the recorded inclusion probability is the true one) and the hourly compute budget
holds for the two together."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest

from tests.daemon.helpers import add_probe_version, count, ingest, postgres_db, rows, running_daemons, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
WORKERS = ("alpha", "beta")


def _daemons(url: str, tmp_path: Path, rate: float, budget: float) -> AbstractContextManager[dict[str, Popen[Any]]]:
    """The two daemons, running the real spot-check job at ``rate`` within ``budget`` seconds an hour."""
    return running_daemons(url, tmp_path, WORKERS, extra=["--spotcheck-rate", str(rate), "--spotcheck-budget",
                                                          str(budget), "--stub-leader-jobs"])


def _log(tmp_path: Path, worker: str) -> tuple[dict[str, tuple[bool, float]], list[float]]:
    """(sample -> (drawn, inclusion prob) decided by ``worker`` in decision order, compute seconds of
    each of its runs)."""
    path = tmp_path / f"spotcheck-{worker}.txt"
    decided: dict[str, tuple[bool, float]] = {}
    compute: list[float] = []
    for line in (path.read_text().splitlines() if path.exists() else []):
        a, b, *c = line.split()
        if a == "compute":
            compute.append(float(b))
        else:
            assert a not in decided, f"{worker} decided {a} twice"
            decided[a] = (b == "1", float(c[0]))
    return decided, compute


def test_two_daemons_decide_each_candidate_once_with_its_recorded_probability(tmp_path: Path, pg_server: str) -> None:
    n = 160
    with postgres_db() as url:
        add_probe_version(url)
        ingest(url, n)
        with _daemons(url, tmp_path, rate=0.3, budget=1e6) as procs:
            wait_for(lambda: count(url, "SELECT COUNT(*) FROM samples WHERE status='scored' AND "
                                        "spotcheck_status IN ('done', 'skipped')") == n, 240, "every sample decided")
            assert all(p.poll() is None for p in procs.values())
        logs = {w: _log(tmp_path, w)[0] for w in WORKERS}
        assert all(logs.values()), {w: len(v) for w, v in logs.items()}  # both daemons took part
        assert set(logs["alpha"]).isdisjoint(logs["beta"])  # no candidate drawn by both
        decided = {**logs["alpha"], **logs["beta"]}
        assert set(decided) == {f"s{i:05d}" for i in range(n)}
        status = dict(rows(url, "SELECT id, spotcheck_status FROM samples"))
        stored = dict(rows(url, "SELECT sample_id, inclusion_prob FROM spot_checks"))
        for sid, (drawn, pi) in decided.items():
            assert status[sid] == ("done" if drawn else "skipped"), sid
            if drawn:
                assert stored[sid] == pytest.approx(pi, rel=1e-12), sid
        assert count(url, "SELECT COUNT(*) FROM samples WHERE lease_owner IS NOT NULL") == 0  # claims released
        # the draws follow the recorded probabilities: checks = sum(pi) within 3 sd
        pis = [pi for _, pi in decided.values()]
        expected, sd = sum(pis), math.sqrt(sum(p * (1 - p) for p in pis))
        assert abs(len(stored) - expected) <= 3 * sd, (len(stored), expected, sd)
        assert 0.1 < expected / n < 0.5  # rate 0.3 (capped near the boundary)


def _prespend(url: str, checks: int, seconds: float) -> None:
    """``checks`` spot checks of ``seconds`` each in the last hour, on samples that are no candidates:
    part of the hour's budget is spent, and the measured cost of a check is small, so the policy
    selects every candidate and only the hard budget stops the daemons."""
    from storage.db import make_engine, session_factory
    from storage.models import Sample, SpotCheck, utcnow

    eng = make_engine(url)
    with session_factory(eng).begin() as s:
        for i in range(checks):
            s.add(Sample(id=f"pre{i}", model="m", ts=utcnow(), prompt="-", answer="yes", status="scored",
                         spotcheck_status="done"))
            s.flush()
            s.add(SpotCheck(sample_id=f"pre{i}", k=0, one_token=True, agreement=1.0, entropy=0.0, inclusion_prob=1.0,
                            reason="uniform", compute_seconds=seconds, created_at=utcnow()))
    eng.dispose()


def test_two_daemons_keep_one_hourly_budget_between_them(tmp_path: Path, pg_server: str) -> None:
    # seconds per hour for both daemons together; 5 s already spent. What is left (1.5 s) must bind
    # before the 160 candidates run out whatever the machine's speed: a check of the tiny fixture
    # costs ~0.02 s on a quiet 2-core box (~65 fit) and ~0.2 s at load 10 (~7 fit)
    n, pre = 160, 50 * 0.1
    budget = pre + 1.5
    with postgres_db() as url:
        add_probe_version(url)
        ingest(url, n)
        _prespend(url, 50, 0.1)
        with _daemons(url, tmp_path, rate=1.0, budget=budget):
            wait_for(lambda: count(url, "SELECT COUNT(*) FROM scores") == n, 120, "all scored")
            spent = lambda: float(rows(url, "SELECT COALESCE(SUM(compute_seconds), 0) FROM spot_checks")[0][0])  # noqa: E731
            wait_for(lambda: spent() >= budget, 180, "the hour's budget spent")
            # both daemons keep running their spot-check job for a while with the budget spent
            runs = lambda: sum(len(_log(tmp_path, w)[1]) for w in WORKERS)  # noqa: E731
            before = runs()
            wait_for(lambda: runs() >= before + 10, 60, "more spot-check runs")
        stored = dict(rows(url, "SELECT sample_id, compute_seconds FROM spot_checks WHERE sample_id LIKE 's%'"))
        logs = {w: _log(tmp_path, w) for w in WORKERS}
        actual = sum(sum(compute) for _, compute in logs.values())  # every check computed, kept or not
        assert actual == pytest.approx(sum(stored.values()), rel=1e-9)  # no check computed and thrown away
        # both daemons ran their spot-check job against the one budget (on a loaded machine one of
        # them may spend all of it before the other decides anything: then the other's runs after
        # the spend are what shows the budget is shared), and no check started once the two together
        # had spent the budget: beyond it only the one check each daemon had in flight (its last)
        assert all(len(runs_of) > 0 for _, runs_of in logs.values()), {w: len(r) for w, (_, r) in logs.items()}
        last = {w: [sid for sid, (drawn, _) in decided.items() if drawn] for w, (decided, _) in logs.items()}
        assert any(last.values()), {w: len(v) for w, v in last.items()}
        assert pre + actual <= budget + sum(stored[v[-1]] for v in last.values() if v), (actual, budget, last)
        assert count(url, "SELECT COUNT(*) FROM samples WHERE spotcheck_status='pending'") > 0  # left for later
