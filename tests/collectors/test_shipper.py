"""The shipper: spool -> storage, idempotent ids, resumes after restarts, survives storage outages."""

from __future__ import annotations

import socket
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from collectors.sample import CollectedImage, CollectedSample
from collectors.shipper import Shipper
from collectors.spool import SpoolWriter
from tests.collectors.helpers import png_bytes


def _sample(i: int, png: bytes | None) -> CollectedSample:
    img = CollectedImage(data=png) if png is not None else CollectedImage(url=f"https://img.example/{i}.png")
    return CollectedSample(id=f"proxy-{i:04d}", source="proxy", ts=datetime(2026, 1, 1, tzinfo=timezone.utc),
                           model="llava-fixture", route="/v1/chat/completions", prompt=f"p{i}", answer="yes",
                           response_id=f"chatcmpl-{i}", image=img, meta={"stream": False})


def _rows(db_url):
    from storage.db import make_engine
    from storage.models import Image, Sample

    eng = make_engine(db_url)
    with eng.connect() as c:
        samples = c.execute(select(Sample.id, Sample.response_id, Sample.source, Sample.image_sha256)).all()
        images = c.execute(select(Image.sha256, Image.url, Image.format)).all()
    eng.dispose()
    return samples, images


def test_ship_resume_and_idempotence(tmp_path, db_url):
    png = png_bytes(12, side=16)
    w = SpoolWriter(tmp_path, "proxy-1", max_bytes=10_000_000)
    w.append([_sample(i, png if i % 2 else None).to_bytes() for i in range(30)])
    sh = Shipper(tmp_path, db_url, batch=7)
    assert sh.ship_once() == 30
    sh.stop()
    samples, images = _rows(db_url)
    assert sorted(s.id for s in samples) == [f"proxy-{i:04d}" for i in range(30)]
    assert {s.source for s in samples} == {"proxy"}
    assert {s.response_id for s in samples} == {f"chatcmpl-{i}" for i in range(30)}
    assert sum(1 for im in images if im.format == "PNG") == 1  # one content-addressed image
    assert sum(1 for im in images if im.url) == 15
    # more records after a restart: only the new ones are shipped
    w.append([_sample(i, png).to_bytes() for i in range(30, 35)])
    sh = Shipper(tmp_path, db_url)
    assert sh.ship_once() == 5
    # a lost cursor (crash between insert and commit) re-ships everything, duplicating nothing
    (tmp_path / "proxy-1" / "cursor.json").unlink()
    assert sh.ship_once() == 35
    sh.stop()
    w.close()
    assert len(_rows(db_url)[0]) == 35


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql+psycopg://nobody@127.0.0.1:{port}/none"


def test_storage_down_keeps_the_spool_then_recovers(tmp_path, db_url):
    w = SpoolWriter(tmp_path, "proxy-1", max_bytes=10_000_000)
    w.append([_sample(i, None).to_bytes() for i in range(5)])
    down = Shipper(tmp_path, _dead_url())
    with pytest.raises(Exception):
        down.ship_once()
    down.stop()
    assert not (tmp_path / "proxy-1" / "cursor.json").exists()
    up = Shipper(tmp_path, db_url)
    assert up.ship_once() == 5
    up.stop()
    w.close()
    assert len(_rows(db_url)[0]) == 5


def test_run_loop_backs_off_and_stops(tmp_path):
    import time

    w = SpoolWriter(tmp_path, "proxy-1", max_bytes=10_000_000)
    w.append([_sample(0, None).to_bytes()])
    sh = Shipper(tmp_path, _dead_url(), interval=0.05, max_backoff=0.2).start()
    time.sleep(0.6)
    sh.stop(5)
    w.close()
    errors = sh.metrics.ship_errors._value.get()
    assert 1 <= errors <= 8  # retried, with growing delays rather than a hot loop


def _stored(db_url):
    from storage.db import make_engine
    from storage.models import Sample

    eng = make_engine(db_url)
    with eng.connect() as c:
        rows = {r.id: r for r in c.execute(select(Sample.id, Sample.prompt, Sample.answer, Sample.meta))}
    eng.dispose()
    return rows


def _text_sample(sid: str, prompt: str = "p", answer: str = "yes", meta: dict | None = None) -> CollectedSample:
    return CollectedSample(id=sid, source="proxy", ts=datetime(2026, 1, 1, tzinfo=timezone.utc), model="m",
                           route="/v1/chat/completions", prompt=prompt, answer=answer, response_id=None,
                           image=CollectedImage(url=f"https://img.example/{sid}.png"), meta=meta or {})


def test_nul_and_unpaired_surrogates_are_stored_alike_on_both_backends(tmp_path, db_url):
    """One client's NUL byte used to stall every lane on PostgreSQL; now text is made storable at the record."""
    a = SpoolWriter(tmp_path, "proxy-a", max_bytes=10_000_000)
    b = SpoolWriter(tmp_path, "proxy-b", max_bytes=10_000_000)
    a.append([s.to_bytes() for s in (
        _text_sample("ok-0"),
        _text_sample("nul-prompt", prompt="is there a\x00dog?"),
        _text_sample("nul-answer", answer="\x00"),
        _text_sample("nul-meta", meta={"k\x00": "v\x00", "list": [1, "\x00x"], "nan": float("nan")}),
        _text_sample("surrogate", prompt="half a pair \ud800 here"),
    )])
    b.append([_text_sample(f"b-{i}").to_bytes() for i in range(3)])
    sh = Shipper(tmp_path, db_url)
    assert sh.ship_once() == 8
    sh.stop()
    a.close()
    b.close()
    rows = _stored(db_url)
    assert len(rows) == 8
    assert rows["nul-prompt"].prompt == "is there a\ufffddog?"
    assert rows["nul-answer"].answer == "\ufffd"
    assert rows["nul-meta"].meta == {"k\ufffd": "v\ufffd", "list": [1, "\ufffdx"], "nan": None}
    assert rows["surrogate"].prompt == "half a pair \ufffd here"
    assert not (tmp_path / "proxy-a" / "dead-letter.jsonl").exists()


def _dead_letters(lane_dir) -> list[dict]:
    import json

    path = lane_dir / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_records_storage_refuses_go_to_the_dead_letter_file_and_the_rest_ships(tmp_path, db_url):
    import base64

    from storage.db import make_engine
    from tests.storage_refusal import refusing

    a = SpoolWriter(tmp_path, "proxy-a", max_bytes=10_000_000)
    b = SpoolWriter(tmp_path, "proxy-b", max_bytes=10_000_000)
    poison = _text_sample("poisoned", prompt="poison").to_bytes()
    a.append([_text_sample("ok-0").to_bytes(), poison, _text_sample("ok-1").to_bytes(),
              _text_sample("x" * 200).to_bytes(),  # longer than a sample id may be
              b"not a spool record", _text_sample("ok-2").to_bytes()])
    b.append([_text_sample("b-0").to_bytes()])
    eng = make_engine(db_url)
    sh = Shipper(tmp_path, db_url, batch=4)
    try:
        with refusing(eng, "poison"):
            assert sh.ship_once() == 7
            assert sh.ship_once() == 0  # the cursor moved past them: nothing stalls
            assert set(_stored(db_url)) == {"ok-0", "ok-1", "ok-2", "b-0"}
            dead = _dead_letters(tmp_path / "proxy-a")
            assert [d["sample_id"] for d in dead] == ["poisoned", "x" * 200, None]
            assert "storage refused" in dead[0]["reason"] and "refused by a test trigger" in dead[0]["reason"]
            assert "'id'" in dead[1]["reason"] and "128" in dead[1]["reason"]
            assert "unreadable" in dead[2]["reason"]
            assert base64.b64decode(dead[0]["payload"]) == poison  # kept whole, to replay once fixed
            metrics = sh.metrics.render().decode()
            assert 'vlmwatch_spool_dead_letters_total{lane="proxy-a"} 3.0' in metrics
            assert 'vlmwatch_spool_dead_letters_total{lane="proxy-b"}' not in metrics
            # a crash between the dead-letter write and the cursor: re-shipping stores and dead-letters nothing twice
            (tmp_path / "proxy-a" / "cursor.json").unlink()
            assert sh.ship_once() == 6
            assert len(_dead_letters(tmp_path / "proxy-a")) == 3
            assert 'vlmwatch_spool_dead_letters_total{lane="proxy-a"} 3.0' in sh.metrics.render().decode()
    finally:
        sh.stop()
        eng.dispose()
        a.close()
        b.close()
