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
