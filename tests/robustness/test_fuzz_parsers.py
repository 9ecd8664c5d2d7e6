"""Every parser of outside input ends each hypothesis case in a record or a named rejection, and
each record it produced ends in storage as a row or a counted ``Rejected`` (both backends)."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import func, select

from storage.db import session_factory
from storage.models import Label, Sample
from storage.repo_labels import add_labels
from storage.records import SampleRecord
from storage.repo_samples import ingest_isolated
from tests.robustness.fuzz import MAX_IMAGE_BYTES, PARSERS, run

CASES = 150  # per parser; bench/robustness.py runs more


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_parser_never_raises(name, tmp_path):
    res = run(name, CASES, tmp_path)
    assert res.cases >= CASES // 2, res.summary()
    assert res.outcomes["kept"] and len(res.outcomes) > 1, f"the strategy reaches only one outcome: {res.summary()}"


@pytest.mark.parametrize("name", ["samples_file_line", "chat_request_body", "chat_answer_body"])
def test_parsed_samples_are_stored_or_rejected(name, engine, tmp_path):
    records = run(name, CASES, tmp_path).records
    # the fuzz reuses a few ids: make them distinct so every record must show up as its own row
    records = [dataclasses.replace(r, id=f"{name}-{i}") for i, r in enumerate(records)]
    res = ingest_isolated(session_factory(engine), records, max_image_bytes=MAX_IMAGE_BYTES)
    assert all(r.reason for r in res.rejected)
    with engine.connect() as c:
        stored = c.execute(select(func.count()).select_from(Sample)).scalar_one()
    assert stored == len(res.inserted) == len(records) - len(res.rejected), (stored, res.rejected[:3])


def test_parsed_labels_are_stored_or_rejected(engine, tmp_path):
    # distinct ids (a batch keeps the last label of each key), and the samples the labels name
    records = [dataclasses.replace(r, sample_id=r.sample_id and f"{r.sample_id}-{i}",
                                   response_id=r.response_id and f"{r.response_id}-{i}")
               for i, r in enumerate(run("labels_file_line", CASES, tmp_path).records)]
    samples = [SampleRecord(id=r.sample_id, model="m", prompt="p", answer="a") for r in records if r.sample_id]
    assert not ingest_isolated(session_factory(engine), samples).rejected
    with session_factory(engine).begin() as s:
        res = add_labels(s, records)
    assert all(r.reason for r in res.rejected)
    with engine.connect() as c:
        stored = c.execute(select(func.count()).select_from(Label)).scalar_one()
    assert res.inserted == stored
    assert res.inserted + len(res.rejected) == len(records), res.rejected[:3]
