"""The tailer: rotation, truncation, checkpointed restart with no skipped or repeated line."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

from collectors.metrics import CollectorMetrics
from collectors.sample import CollectedSample
from collectors.sampling import SamplingPolicy
from collectors.spool import SpoolReader, SpoolWriter
from collectors.tailer import Tailer
from tests.collectors.helpers import chat_body, data_url, png_bytes

IMG = data_url(png_bytes(11, side=16))


def _line(i: int) -> str:
    return json.dumps({"id": f"line-{i}", "model": "m", "prompt": f"p{i}", "answer": "yes", "image": IMG}) + "\n"


def _write(path: Path, lines: list[int], mode: str = "a") -> None:
    with open(path, mode) as f:
        f.write("".join(_line(i) for i in lines))


class _Setup:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.log = tmp / "requests.jsonl"
        self.writer = SpoolWriter(tmp / "spool", "tail", max_bytes=100_000_000)
        self.metrics = CollectorMetrics("tailer")

    def tailer(self) -> Tailer:
        return Tailer(self.log, checkpoint=self.tmp / "cp.json", sink=self.writer, policy=SamplingPolicy(1.0),
                      metrics=self.metrics, batch_lines=4)

    def drain(self, t: Tailer, polls: int = 30) -> None:
        for _ in range(polls):
            t.poll_once()

    def ids(self) -> list[str]:
        r = SpoolReader(self.tmp / "spool", "tail")
        payloads, _ = r.read(max_records=100_000)
        r.close()
        return [CollectedSample.from_bytes(p).id for p in payloads]


def test_reads_lines_into_spool_and_counts_bad_lines_with_offsets(tmp_path, caplog):
    s = _Setup(tmp_path)
    _write(s.log, [0, 1])
    with open(s.log, "a") as f:
        bad_offset = f.tell()
        f.write("{not json\n")
        f.write(json.dumps({"model": "m", "prompt": "p", "answer": "a", "image": "data:image/png;base64,%%%%"}) + "\n")
        f.write(json.dumps({"model": "m", "prompt": "p", "answer": "a",
                            "image": "aGVsbG8gd29ybGQgdGhpcyBpcyBub3QgYW4gaW1hZ2UgYXQgYWxsIGp1c3QgdGV4dCB0ZXh0IHRleHQ="}) + "\n")
        f.write(json.dumps({"request": chat_body("ex?", IMG), "response": {
            "id": "chatcmpl-abc", "choices": [{"index": 0, "message": {"role": "assistant", "content": "no"},
                                               "logprobs": {"content": [{"token": "no", "logprob": -0.75}]}}]}}) + "\n")
    t = s.tailer()
    with caplog.at_level(logging.WARNING, logger="collectors.tailer"):
        s.drain(t)
    ids = s.ids()
    assert ids[:2] == ["line-0", "line-1"] and len(ids) == 3
    assert s.metrics.dropped_count("bad_json") == 1 and s.metrics.dropped_count("bad_image") == 2
    assert f"offset {bad_offset}" in caplog.text
    r = SpoolReader(tmp_path / "spool", "tail")
    ex = CollectedSample.from_bytes(r.read()[0][2])
    r.close()
    assert (ex.prompt, ex.answer, ex.response_id) == ("ex?", "no", "chatcmpl-abc")
    assert ex.meta["answer_logprobs"] == [-0.75]  # a logged response's logprobs feed the scorer too


def test_partial_line_waits_for_its_newline(tmp_path):
    s = _Setup(tmp_path)
    full = _line(0)
    s.log.write_text(full[:20])
    t = s.tailer()
    s.drain(t, 3)
    assert s.ids() == []
    with open(s.log, "a") as f:
        f.write(full[20:])
    s.drain(t, 3)
    assert s.ids() == ["line-0"]


def test_restart_across_rotation_neither_skips_nor_repeats(tmp_path):
    s = _Setup(tmp_path)
    _write(s.log, range(0, 10), "w")
    t = s.tailer()
    s.drain(t, 2)  # read some, not all (batch of 4 lines per poll)
    t.close()  # the tailer stops (restart)...
    _write(s.log, range(10, 14))  # ...the app keeps logging...
    os.rename(s.log, tmp_path / "requests.jsonl.1")  # ...the log rotates...
    _write(tmp_path / "requests.jsonl.1", range(14, 16))  # ...the app still writes the old file briefly...
    _write(s.log, range(16, 25), "w")  # ...then the new one
    t = s.tailer()  # restarted: finds the old file by inode and finishes it first
    s.drain(t)
    _write(s.log, range(25, 30))
    s.drain(t)
    ids = s.ids()
    assert Counter(ids) == Counter(f"line-{i}" for i in range(30))  # every line exactly once
    assert ids[:16] == [f"line-{i}" for i in range(16)]  # old file finished before the new one


def test_rotation_while_running_and_truncation(tmp_path):
    s = _Setup(tmp_path)
    _write(s.log, range(0, 5), "w")
    t = s.tailer()
    s.drain(t)
    os.rename(s.log, tmp_path / "requests.jsonl.1")
    _write(tmp_path / "requests.jsonl.1", [5])
    _write(s.log, range(6, 9), "w")
    s.drain(t)
    assert s.ids() == [f"line-{i}" for i in range(9)]
    with open(s.log, "w"):  # copytruncate
        pass
    s.drain(t)
    _write(s.log, [9, 10])
    s.drain(t)
    assert s.ids() == [f"line-{i}" for i in range(11)]
    t.close()
    t = s.tailer()  # restart after truncation: nothing repeated
    _write(s.log, [11])
    s.drain(t)
    assert s.ids() == [f"line-{i}" for i in range(12)]


def test_sampling_of_lines_is_deterministic(tmp_path):
    s = _Setup(tmp_path)
    _write(s.log, range(200), "w")
    t = Tailer(s.log, checkpoint=tmp_path / "cp.json", sink=s.writer, policy=SamplingPolicy(0.25),
               metrics=s.metrics)
    s.drain(t, 5)
    first = s.ids()
    assert 25 <= len(first) <= 75
    assert s.metrics.dropped_count("sampled_out") == 200 - len(first)
    s2 = _Setup(tmp_path / "again")
    (tmp_path / "again").mkdir(exist_ok=True)
    s2.log.write_text(s.log.read_text())
    t2 = Tailer(s2.log, checkpoint=tmp_path / "again" / "cp.json", sink=s2.writer, policy=SamplingPolicy(0.25))
    s2.drain(t2, 5)
    assert s2.ids() == first


def test_vlmwatch_tail_command_follows_and_stops_cleanly(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / "app.jsonl"
    _write(log, range(5), "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMWATCH_")}
    proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "--log-level", "INFO", "tail", str(log),
                             "--spool", str(tmp_path / "spool"), "--sample-rate", "1", "--no-ship",
                             "--poll-interval", "0.05"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        lane_dirs: list[Path] = []
        while time.monotonic() < deadline:
            lane_dirs = [p for p in (tmp_path / "spool").glob("tail-app.jsonl-*") if p.is_dir()]
            if lane_dirs and (lane_dirs[0] / "tail-checkpoint.json").exists():
                cp = json.loads((lane_dirs[0] / "tail-checkpoint.json").read_text())
                if cp["offset"] == log.stat().st_size:
                    break
            time.sleep(0.05)
        _write(log, [5])
        with open(log, "a") as f:
            f.write("not json\n")
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out
    assert "line skipped" in out
    r = SpoolReader(tmp_path / "spool", lane_dirs[0].name)
    ids = [CollectedSample.from_bytes(p).id for p in r.read()[0]]
    r.close()
    assert ids == [f"line-{i}" for i in range(6)]
    assert "7 lines read, 1 unusable" in out


def _exchange_line(prompt: str, rid: str | None) -> str:
    resp: dict = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"}}]}
    if rid is not None:
        resp["id"] = rid
    return json.dumps({"request": chat_body(prompt, IMG), "response": resp}) + "\n"


def _url_line(i: int) -> str:
    """A sample line without id or response id, short (no image bytes), of the same length for every i < 10."""
    return json.dumps({"model": "m", "prompt": f"p{i}", "answer": "yes", "image": f"https://img.example/{i}.png"}) + "\n"


def _stored_samples(db_url) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from storage.db import make_engine
    from storage.models import Sample

    eng = make_engine(db_url)
    with eng.connect() as c:
        rows = [tuple(r) for r in c.execute(select(Sample.id, Sample.prompt).order_by(Sample.prompt))]
    eng.dispose()
    return rows


def _ship(tmp_path: Path, db_url) -> None:
    from collectors.shipper import Shipper

    sh = Shipper(tmp_path / "spool", db_url)
    assert sh.wait_idle()
    sh.stop()


def test_copytruncate_never_reuses_ids_of_earlier_lines(tmp_path, db_url):
    """logrotate's copytruncate keeps the inode and starts again at offset 0: new lines must get new ids."""
    s = _Setup(tmp_path)
    t = s.tailer()
    with_rid = [_exchange_line(f"q{i}", f"chatcmpl-a{i}") for i in range(3)]
    without = [_url_line(i) for i in range(3)]
    s.log.write_text("".join(with_rid + without))
    s.drain(t)
    _ship(tmp_path, db_url)
    assert len(_stored_samples(db_url)) == 6
    with open(s.log, "w"):  # copytruncate: same inode, size 0
        pass
    s.drain(t)
    # three different exchanges and three different samples, each at an offset an earlier line had
    again = [_exchange_line(f"r{i}", f"chatcmpl-b{i}") for i in range(3)] + [_url_line(i + 3) for i in range(3)]
    assert [len(x) for x in again] == [len(x) for x in with_rid + without]
    s.log.write_text("".join(again))
    s.drain(t)
    _ship(tmp_path, db_url)
    rows = _stored_samples(db_url)
    want = [f"q{i}" for i in range(3)] + [f"r{i}" for i in range(3)] + [f"p{i}" for i in range(6)]
    assert sorted(p for _, p in rows) == sorted(want)  # 12 rows: none of the new lines was taken for an old one


def test_truncated_and_regrown_while_stopped_is_read_from_its_start(tmp_path, db_url):
    """The checkpointed inode now holds other lines (truncated and rewritten, or a reused inode)."""
    s = _Setup(tmp_path)
    s.log.write_text(_url_line(0))  # shorter than the 256 bytes the checkpoint's head hash covers
    t = s.tailer()
    s.drain(t)
    t.close()
    with open(s.log, "w") as f:  # while the tailer is stopped: truncated, then longer than before
        f.write("".join(_url_line(i) for i in (1, 2, 3)))
    t = s.tailer()
    s.drain(t)
    _ship(tmp_path, db_url)
    assert sorted(p for _, p in _stored_samples(db_url)) == ["p0", "p1", "p2", "p3"]
    assert s.metrics.dropped_count("bad_json") == 0
