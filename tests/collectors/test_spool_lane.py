"""The durable spool: fsync'd append, torn-tail recovery, bounded size with counted oldest-drop."""

from __future__ import annotations

import pytest

from collectors.spool import Position, SpoolBusy, SpoolReader, SpoolWriter, lanes


def _recs(n: int, size: int = 100, start: int = 0) -> list[bytes]:
    return [f"{i:08d}".encode() + b"x" * (size - 8) for i in range(start, start + n)]


def _one_segment(tmp_path, n: int):
    """Write ``n`` records to lane ``lane`` and close it; the path of its one segment file."""
    w = SpoolWriter(tmp_path, "lane", max_bytes=10_000_000)
    w.append(_recs(n))
    w.close()
    return next((tmp_path / "lane").glob("seg-*.log"))


def test_append_read_commit_resume(tmp_path):
    w = SpoolWriter(tmp_path, "lane", max_bytes=10_000_000)
    assert w.append(_recs(10)) == 10
    r = SpoolReader(tmp_path, "lane")
    got, pos = r.read(max_records=4)
    assert got == _recs(4)
    r.commit(pos)
    r.close()
    r = SpoolReader(tmp_path, "lane")  # a restarted shipper resumes at the cursor
    got, pos = r.read()
    assert got == _recs(6, start=4)
    r.commit(pos)
    w.append(_recs(2, start=10))
    assert r.read()[0] == _recs(2, start=10)
    assert lanes(tmp_path) == ["lane"]
    w.close()
    r.close()


def test_torn_tail_is_cut_and_never_read(tmp_path):
    seg = _one_segment(tmp_path, 3)
    good = seg.stat().st_size
    with open(seg, "ab") as f:  # what a crash mid-write leaves: a header and half a payload
        f.write(b"VWS1" + (500).to_bytes(4, "little") + b"\0\0\0\0" + b"half")
    r = SpoolReader(tmp_path, "lane")
    assert r.read()[0] == _recs(3)  # the reader stops at the torn record
    w = SpoolWriter(tmp_path, "lane", max_bytes=10_000_000)
    assert seg.stat().st_size == good
    w.append(_recs(2, start=3))
    assert r.read()[0] == _recs(5)
    w.close()
    r.close()


def test_corrupted_record_fails_crc(tmp_path):
    seg = _one_segment(tmp_path, 3)
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0xFF  # flip a byte of the last payload
    seg.write_bytes(bytes(data))
    r = SpoolReader(tmp_path, "lane")
    assert r.read()[0] == _recs(2)
    r.close()


def test_bounded_bytes_drop_oldest_and_count(tmp_path):
    dropped = []
    w = SpoolWriter(tmp_path, "lane", max_bytes=20_000, segment_bytes=4_000, on_drop=dropped.append)
    for i in range(100):
        w.append(_recs(1, size=500, start=i))
        assert w.total_bytes <= 20_000
    assert sum(p.stat().st_size for p in (tmp_path / "lane").glob("seg-*.log")) <= 20_000
    r = SpoolReader(tmp_path, "lane")
    left, _ = r.read(max_records=1000)
    assert sum(dropped) + len(left) == 100  # every record is either still there or counted
    assert left == _recs(len(left), size=500, start=100 - len(left))  # the newest survive
    r.close()
    w.close()


def test_shipped_records_are_not_counted_as_dropped(tmp_path):
    dropped = []
    w = SpoolWriter(tmp_path, "lane", max_bytes=20_000, segment_bytes=4_000, on_drop=dropped.append)
    r = SpoolReader(tmp_path, "lane")
    for i in range(100):
        w.append(_recs(1, size=500, start=i))
        got, pos = r.read()
        r.commit(pos)
    assert sum(dropped) == 0
    r.close()
    w.close()


def test_one_writer_and_one_shipper_per_lane(tmp_path):
    w = SpoolWriter(tmp_path, "lane", max_bytes=100_000)
    with pytest.raises(SpoolBusy, match="writer"):
        SpoolWriter(tmp_path, "lane", max_bytes=100_000)
    r = SpoolReader(tmp_path, "lane")
    with pytest.raises(SpoolBusy, match="shipper"):
        SpoolReader(tmp_path, "lane")
    w.close()
    r.close()
    SpoolWriter(tmp_path, "lane", max_bytes=100_000).close()


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="lane name"):
        SpoolWriter(tmp_path, "../escape", max_bytes=100_000)
    with pytest.raises(ValueError, match="max_bytes"):
        SpoolWriter(tmp_path, "lane", max_bytes=10)


def test_reader_skips_segment_dropped_for_space(tmp_path):
    w = SpoolWriter(tmp_path, "lane", max_bytes=20_000, segment_bytes=4_000)
    r = SpoolReader(tmp_path, "lane")
    w.append(_recs(2, size=500))
    got, pos = r.read(max_records=1)
    r.commit(pos)
    for i in range(2, 80):
        w.append(_recs(1, size=500, start=i))
    got, pos = r.read(max_records=1000)
    assert got and got[-1] == _recs(1, size=500, start=79)[0]
    assert pos > Position(1, 0)
    r.close()
    w.close()
