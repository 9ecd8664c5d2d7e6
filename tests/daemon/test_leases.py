"""Row leases: concurrent claims are disjoint, expired leases return, scores are written once."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from monitor.daemon.leases import claim_samples, release_leases, write_scores
from storage.db import make_engine, session_factory
from storage.models import Sample, Score, utcnow
from tests.daemon.helpers import add_probe_version, ingest, postgres_db, sqlite_db


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path: Path):
    if request.param == "sqlite":
        yield sqlite_db(tmp_path)
    else:
        request.getfixturevalue("pg_server")  # skip, or fail in CI, without a server
        with postgres_db() as u:
            yield u


def test_claim_expire_and_release(url: str) -> None:
    ingest(url, 10, images=False)
    sessions = session_factory(make_engine(url))
    now = utcnow()
    with sessions() as s:
        a = claim_samples(s, worker="a", models=["m"], limit=4, lease_seconds=60, now=now)
    with sessions() as s:
        b = claim_samples(s, worker="b", models=["m"], limit=100, lease_seconds=60, now=now)
    assert [x.id for x in a] == [f"s{i:05d}" for i in range(4)]
    assert {x.id for x in b} == {f"s{i:05d}" for i in range(4, 10)}
    with sessions() as s:  # nothing left until a lease expires
        assert claim_samples(s, worker="c", models=["m"], limit=100, lease_seconds=60, now=now) == []
        late = claim_samples(s, worker="c", models=["m"], limit=100, lease_seconds=60, now=now + timedelta(seconds=61))
    assert len(late) == 10 and all(x.lease_owner == "c" for x in late)
    with sessions() as s:
        assert release_leases(s, "c") == 10
        again = claim_samples(s, worker="d", models=["other"], limit=100, lease_seconds=60)
    assert again == []  # other models' samples are not claimed


def test_scores_written_once_even_after_lease_loss(url: str) -> None:
    pid = add_probe_version(url)
    ingest(url, 3, images=False)
    sessions = session_factory(make_engine(url))
    with sessions() as s:
        claimed = claim_samples(s, worker="a", models=["m"], limit=3, lease_seconds=60)
    rows = [{"sample_id": c.id, "probe_version_id": pid, "p_correct": 0.5} for c in claimed]
    with sessions() as s:
        assert write_scores(s, "a", [dict(r) for r in rows]) == 3
    with sessions() as s:  # a slow second worker finishing the same batch writes nothing new
        assert write_scores(s, "b", [dict(r) for r in rows]) == 0
        assert s.scalar(select(func.count()).select_from(Score)) == 3
        assert set(s.scalars(select(Sample.status))) == {"scored"}


@pytest.mark.postgres
def test_concurrent_claims_on_postgres_are_disjoint(pg_server: str) -> None:
    with postgres_db() as url:
        ingest(url, 200, images=False)
        sessions = session_factory(make_engine(url, pool_size=10))
        got: dict[str, list[str]] = {}
        barrier = threading.Barrier(6)

        def worker(name: str) -> None:
            mine: list[str] = []
            barrier.wait()
            while True:
                with sessions() as s:
                    batch = claim_samples(s, worker=name, models=["m"], limit=7, lease_seconds=60)
                if not batch:
                    break
                mine += [b.id for b in batch]
            got[name] = mine

        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        all_ids = [i for v in got.values() for i in v]
        assert len(all_ids) == 200 and len(set(all_ids)) == 200
        assert sum(1 for v in got.values() if v) >= 2  # the work was actually shared
