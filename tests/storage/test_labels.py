"""Labels by sample id or response id; early labels wait and are joined when the sample arrives."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from storage.db import session_factory
from storage.models import Label
from storage.records import LabelRecord, SampleRecord
from storage.repo_labels import add_labels
from storage.repo_samples import ingest_samples
from storage.repo_status import pending_work

TS = datetime(2026, 11, 25, tzinfo=timezone.utc)


def sample(i: int) -> SampleRecord:
    return SampleRecord(id=f"s{i}", model="m", prompt="p", answer="yes", ts=TS, response_id=f"chatcmpl-{i}")


def labels(engine) -> list[tuple]:
    with engine.connect() as conn:
        q = select(Label.sample_id, Label.response_id, Label.source, Label.correct, Label.value).order_by(Label.id)
        return [tuple(r) for r in conn.execute(q)]


def test_labels_by_sample_id_and_by_response_id(engine):
    f = session_factory(engine)
    with f.begin() as s:
        ingest_samples(s, [sample(1), sample(2)])
    with f.begin() as s:
        res = add_labels(s, [
            LabelRecord(correct=True, sample_id="s1"),
            LabelRecord(correct=False, response_id="chatcmpl-2", source="ground_truth"),
            LabelRecord(correct=True, sample_id="s2", source="self_consistency", value=0.9),
        ])
    assert (res.inserted, res.waiting, res.rejected) == (3, 0, [])
    assert labels(engine) == [
        ("s1", "chatcmpl-1", "human", True, None),
        ("s2", "chatcmpl-2", "ground_truth", False, None),
        ("s2", "chatcmpl-2", "self_consistency", True, 0.9),
    ]


def test_label_before_its_sample_is_joined_on_ingest(engine):
    f = session_factory(engine)
    with f.begin() as s:
        res = add_labels(s, [LabelRecord(correct=False, response_id="chatcmpl-7")])
    assert res.inserted == 1 and res.waiting == 1
    with f() as s:
        assert pending_work(s)["labels_waiting_for_sample"] == 1
    with f.begin() as s:
        ingest_samples(s, [sample(7)])
    assert labels(engine) == [("s7", "chatcmpl-7", "human", False, None)]
    with f() as s:
        assert pending_work(s)["labels_waiting_for_sample"] == 0
    # the same label sent again, now by sample id, is the same row
    with f.begin() as s:
        res = add_labels(s, [LabelRecord(correct=False, sample_id="s7")])
    assert (res.inserted, res.unchanged) == (0, 1)


def test_resent_label_is_unchanged_and_a_new_verdict_updates(engine):
    f = session_factory(engine)
    with f.begin() as s:
        ingest_samples(s, [sample(1)])
    with f.begin() as s:
        add_labels(s, [LabelRecord(correct=True, sample_id="s1")])
    with f.begin() as s:
        again = add_labels(s, [LabelRecord(correct=True, response_id="chatcmpl-1")])
    with f.begin() as s:
        changed = add_labels(s, [LabelRecord(correct=False, sample_id="s1")])
    assert (again.inserted, again.unchanged, again.updated) == (0, 1, 0)
    assert (changed.inserted, changed.updated) == (0, 1)
    assert labels(engine) == [("s1", "chatcmpl-1", "human", False, None)]


def test_bad_labels_are_rejected_with_reasons(engine):
    f = session_factory(engine)
    with f.begin() as s:
        ingest_samples(s, [sample(1)])
    with f.begin() as s:
        res = add_labels(s, [
            LabelRecord(correct=True, sample_id="nope"),
            LabelRecord(correct=True, sample_id="s1", source="crowd"),
            LabelRecord(correct=True),
            LabelRecord(correct="yes", sample_id="s1"),  # type: ignore[arg-type]
            LabelRecord(correct=True, sample_id="s1"),
        ])
    reasons = {r.index: r.reason for r in res.rejected}
    assert "unknown sample_id" in reasons[0]
    assert "source" in reasons[1] and "crowd" in reasons[1]
    assert "sample_id" in reasons[2]
    assert "correct" in reasons[3]
    assert res.inserted == 1 and len(reasons) == 4


def test_labels_racing_their_samples_are_always_joined(engine):
    """A label stored as waiting while its sample's transaction commits must still be joined (both backends)."""
    import threading

    from sqlalchemy import func

    from storage.models import Sample

    n = 250
    f = session_factory(engine)
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def run(step) -> None:
        try:
            for i in range(n):
                start.wait(30)  # sample i and label i go in at the same moment
                with f.begin() as s:
                    step(s, i)
        except BaseException as e:  # surfaced below
            failures.append(e)
            start.abort()

    def sample_step(s, i):
        ingest_samples(s, [SampleRecord(id=f"race-s{i}", model="m", prompt="p", answer="a", ts=TS,
                                        response_id=f"chatcmpl-race-{i}")])

    def label_step(s, i):
        add_labels(s, [LabelRecord(correct=bool(i % 2), response_id=f"chatcmpl-race-{i}")])

    threads = [threading.Thread(target=run, args=(step,)) for step in (sample_step, label_step)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    with f() as s:
        stuck = s.scalar(select(func.count()).select_from(Label).where(
            Label.sample_id.is_(None), Label.response_id.in_(select(Sample.response_id))))
        joined = s.scalar(select(func.count()).select_from(Label).where(Label.sample_id.is_not(None)))
    assert stuck == 0, f"{stuck} of {n} labels wait for a sample that is stored"
    assert joined == n
