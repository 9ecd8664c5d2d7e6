"""Idempotent batched sample ingest, content-addressed images, labels from the samples file."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from storage.db import session_factory
from storage.models import Image, Label, Sample
from storage.records import SampleRecord
from storage.repo_samples import ingest_samples

TS = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def rec(i: int, **kw) -> SampleRecord:
    base = dict(id=f"s{i}", model="llava-fixture", prompt="Is there a dog?", answer="yes", ts=TS + timedelta(seconds=i))
    return SampleRecord(**{**base, **kw})


def count(engine, model) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def test_same_ids_twice_are_stored_once(engine, make_png):
    img = make_png()
    records = [rec(i, image=img, response_id=f"chatcmpl-{i}", meta={"k": i}) for i in range(50)]
    factory = session_factory(engine)
    with factory.begin() as s:
        first = ingest_samples(s, records)
    with factory.begin() as s:
        second = ingest_samples(s, records[:30] + [rec(99)])
    assert len(first.inserted) == 50 and first.duplicates == 0 and first.images_inserted == 1
    assert second.inserted == ["s99"] and second.duplicates == 30 and second.images_inserted == 0
    assert count(engine, Sample) == 51 and count(engine, Image) == 1
    with factory() as s:
        row = s.get(Sample, "s7")
        assert row.status == "pending" and row.response_id == "chatcmpl-7" and row.meta == {"k": 7}
        assert row.ts == TS + timedelta(seconds=7) and row.ts.tzinfo is not None
        image = s.get(Image, row.image_sha256)
        assert (image.format, image.width, image.height) == ("PNG", 12, 8)
        assert image.data == img


def test_duplicate_ids_inside_one_batch(engine):
    with session_factory(engine).begin() as s:
        res = ingest_samples(s, [rec(1), rec(1, answer="no"), rec(2)])
    assert sorted(res.inserted) == ["s1", "s2"] and res.duplicates == 1
    with session_factory(engine)() as s:
        assert s.get(Sample, "s1").answer == "yes"  # first one wins, never overwritten


def test_bad_records_are_rejected_with_reasons_and_the_rest_stored(engine, make_png):
    records = [
        rec(0, image=make_png()),
        rec(1, image=b"GIF89a-not-really"),
        rec(2, id=""),
        rec(3, image=make_png(), image_url="http://x/y.png"),
        rec(4, image=make_png((1, 2, 3)) * 1),
        rec(5, meta={"bad": object()}),
        rec(6, response_id="r" * 200),
    ]
    with session_factory(engine).begin() as s:
        res = ingest_samples(s, records, max_image_bytes=10_000)
    reasons = {r.index: r.reason for r in res.rejected}
    assert set(reasons) == {1, 2, 3, 5, 6}
    assert "not an image" in reasons[1]
    assert "'id'" in reasons[2]
    assert "not both" in reasons[3]
    assert "JSON" in reasons[5]
    assert "response_id" in reasons[6]
    assert sorted(res.inserted) == ["s0", "s4"] and res.images_inserted == 2


def test_image_url_and_naive_timestamps(engine):
    naive = datetime(2026, 1, 2, 3, 4, 5)
    with session_factory(engine).begin() as s:
        ingest_samples(s, [rec(1, image_url="https://cdn.example/a.jpg", ts=naive), rec(2, image_url="https://cdn.example/a.jpg")])
    with session_factory(engine)() as s:
        a, b = s.get(Sample, "s1"), s.get(Sample, "s2")
        assert a.image_sha256 == b.image_sha256
        assert s.get(Image, a.image_sha256).url == "https://cdn.example/a.jpg"
        assert a.ts == naive.replace(tzinfo=timezone.utc)


def test_label_field_becomes_one_label_row(engine):
    with session_factory(engine).begin() as s:
        res = ingest_samples(s, [rec(1, label=True, response_id="r1"), rec(2, label=False), rec(3)])
    assert res.labels_inserted == 2
    with session_factory(engine).begin() as s:  # re-sent: no second label
        assert ingest_samples(s, [rec(1, label=True, response_id="r1")]).labels_inserted == 0
    with session_factory(engine)() as s:
        rows = s.execute(select(Label.sample_id, Label.response_id, Label.correct, Label.source).order_by(Label.sample_id)).all()
    assert [tuple(r) for r in rows] == [("s1", "r1", True, "ground_truth"), ("s2", None, False, "ground_truth")]


def test_unknown_label_source_is_a_caller_error(engine):
    with session_factory(engine).begin() as s, pytest.raises(ValueError, match="label_source"):
        ingest_samples(s, [rec(1)], label_source="crowd")


def test_concurrent_writers_store_each_id_once(engine):
    """Two writers racing on overlapping ids: every id stored once, each counted by exactly one."""
    import threading

    records = [rec(i) for i in range(600)]
    parts = [records[:400], records[:200] + records[400:] + records[200:400]]  # same first batches at once
    results, errors = [], []
    barrier = threading.Barrier(2)

    def write(part):
        try:
            barrier.wait()
            for i in range(0, len(part), 100):
                with session_factory(engine).begin() as s:
                    results.append(ingest_samples(s, part[i : i + 100]))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert count(engine, Sample) == 600
    inserted = [i for r in results for i in r.inserted]
    assert sorted(inserted) == sorted(r.id for r in records)
    assert sum(r.duplicates for r in results) == sum(map(len, parts)) - 600


def test_purged_image_bytes_are_refilled_by_a_new_sample(engine, make_png):
    img = make_png((5, 6, 7))
    f = session_factory(engine)
    with f.begin() as s:
        ingest_samples(s, [rec(1, image=img)])
    with f.begin() as s:  # what retention does after scoring
        image = s.get(Image, s.get(Sample, "s1").image_sha256)
        image.data, image.purged_at, image.created_at = None, TS, TS - timedelta(days=3)
    with f.begin() as s:
        res = ingest_samples(s, [rec(2, image=img)])
    assert res.images_inserted == 0
    with f() as s:
        image = s.get(Image, s.get(Sample, "s2").image_sha256)
        assert image.data == img and image.purged_at is None
        assert image.created_at > TS - timedelta(days=3)  # the TTL restarts
