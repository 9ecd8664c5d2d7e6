"""``kill -9`` of the proxy process mid-traffic loses no sample the spool had accepted; storage
down never fails a client request."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from collectors.shipper import Shipper
from collectors.spool import SpoolReader
from tests.collectors.helpers import chat_body, data_url, png_bytes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_proxy(cwd: Path, upstream_port: int, port: int, env: dict[str, str] | None = None,
                 ship: bool = False) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VLMWATCH_")}
    full_env.update(env or {})
    args = [sys.executable, "-m", "monitor.cli", "--log-level", "WARNING", "proxy",
            "--upstream", f"http://127.0.0.1:{upstream_port}", "--listen", f"127.0.0.1:{port}",
            "--spool", str(cwd / "spool"), "--sample-rate", "1.0"]
    if not ship:
        args.append("--no-ship")
    proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited: {proc.stdout.read().decode() if proc.stdout else ''}")
    proc.kill()
    raise RuntimeError("proxy did not start")


def _spooled(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    m = re.search(r'vlmwatch_collector_samples_spooled_total\{source="proxy"\} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def _traffic(port: int, stop: threading.Event, counts: dict[str, int]) -> None:
    img = data_url(png_bytes(7, side=24))
    i = 0
    with httpx.Client(timeout=5) as c:
        while not stop.is_set():
            i += 1
            try:
                r = c.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat_body(f"kill {i}?", img))
                counts["ok" if r.status_code == 200 else "bad"] += 1
            except httpx.HTTPError:
                counts["error"] += 1
                time.sleep(0.01)


@pytest.mark.slow
def test_kill9_mid_traffic_loses_no_accepted_sample(tmp_path, canned, db_url):
    _, upstream = canned
    port = _free_port()
    proc = _start_proxy(tmp_path, upstream, port)
    stop = threading.Event()
    counts = {"ok": 0, "bad": 0, "error": 0}
    threads = [threading.Thread(target=_traffic, args=(port, stop, counts)) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while _spooled(port) < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        accepted = _spooled(port)  # the spool had fsync'd at least this many
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        if proc.poll() is None:
            proc.kill()
    assert accepted >= 50 and counts["ok"] >= accepted

    # restart on the same spool lane (recovers any torn tail), then ship everything
    proc2 = _start_proxy(tmp_path, upstream, port)
    try:
        httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                   json=chat_body("after restart?", data_url(png_bytes(8, side=24))), timeout=5).raise_for_status()
        deadline = time.monotonic() + 10
        while _spooled(port) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc2.send_signal(signal.SIGTERM)
        proc2.wait(20)
    lane = f"proxy-{port}"
    reader = SpoolReader(tmp_path / "spool", lane)
    in_spool, _ = reader.read(max_records=100_000)
    reader.close()
    assert len(in_spool) >= accepted + 1

    shipper = Shipper(tmp_path / "spool", db_url)
    assert shipper.wait_idle(60)
    shipper.stop()
    from storage.db import make_engine
    from storage.models import Sample

    eng = make_engine(db_url)
    with eng.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(Sample)).scalar_one()
        prompts = set(conn.execute(select(Sample.prompt)).scalars())
    eng.dispose()
    assert stored == len(in_spool) >= accepted + 1
    assert "after restart?" in prompts
    # shipping again after a restart duplicates nothing
    (tmp_path / "spool" / lane / "cursor.json").unlink(missing_ok=True)
    shipper = Shipper(tmp_path / "spool", db_url)
    shipper.wait_idle(60)
    shipper.stop()
    eng = make_engine(db_url)
    with eng.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Sample)).scalar_one() == stored
    eng.dispose()


def test_storage_down_fails_no_client_request(tmp_path, canned):
    _, upstream = canned
    port = _free_port()
    dead = f"postgresql+psycopg://nobody@127.0.0.1:{_free_port()}/none"
    old_lane = tmp_path / "spool" / "proxy-old"  # dead letters an earlier shipper left: counted on /metrics
    old_lane.mkdir(parents=True)
    (old_lane / "dead-letter.jsonl").write_text('{"payload_sha256":"%s","reason":"x"}\n' % ("0" * 64))
    proc = _start_proxy(tmp_path, upstream, port, env={"VLMWATCH_STORAGE__URL": dead}, ship=True)
    lines: list[str] = []  # the proxy's output, read as it comes (the pipe must not fill up)
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    img = data_url(png_bytes(9, side=24))
    try:
        with httpx.Client(timeout=5) as c:
            codes = [c.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat_body(f"down {i}", img)).status_code
                     for i in range(100)]
        deadline = time.monotonic() + 10
        while _spooled(port) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert codes == [200] * 100
        assert _spooled(port) == 100  # kept in the spool while storage is unreachable
        # drops counted in the sampler process show on the proxy's /metrics
        assert httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=b"{oops",
                          headers={"content-type": "application/json"}).status_code == 200
        deadline = time.monotonic() + 5
        pattern = 'vlmwatch_collector_samples_dropped_total{reason="bad_json",source="proxy"} 1.0'
        while pattern not in httpx.get(f"http://127.0.0.1:{port}/metrics").text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pattern in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'vlmwatch_spool_dead_letters_total{lane="proxy-old"} 1.0' in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        # the shipper (a background-priority child: slow to start on a busy machine) says storage
        # is unreachable and keeps the samples
        deadline = time.monotonic() + 60
        while not any(b"shipping to storage failed" in ln for ln in lines) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        reader.join(10)
    out = b"".join(lines).decode()
    assert proc.returncode == 0, out
    assert "shipping to storage failed" in out, out


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of each direct child of ``pid``."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out[int(entry.name)] = cmd
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and SCHED_BATCH (Linux)")
def test_sampler_and_shipper_run_at_background_priority(tmp_path, canned):
    """The request path keeps its priority; the sampling worker and the shipper yield the CPU to it."""
    _, upstream = canned
    port = _free_port()
    proc = _start_proxy(tmp_path, upstream, port, ship=True,
                        env={"VLMWATCH_STORAGE__URL": f"sqlite:///{tmp_path / 'x.db'}",
                             "VLMWATCH_SPOOL__BACKGROUND_NICE": "7"})
    try:
        kids = _children(proc.pid)
        sampler = [p for p, cmd in kids.items() if "collectors.sampler_process" in cmd]
        shipper = [p for p, cmd in kids.items() if "multiprocessing.spawn" in cmd]
        assert len(sampler) == 1 and len(shipper) == 1, kids
        base = os.getpriority(os.PRIO_PROCESS, proc.pid)
        deadline = time.monotonic() + 10  # each child lowers its own priority as its first step
        while time.monotonic() < deadline and any(
                os.getpriority(os.PRIO_PROCESS, pid) == base for pid in (*sampler, *shipper)):
            time.sleep(0.05)
        for pid in (*sampler, *shipper):
            assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, base + 7)
            assert os.sched_getscheduler(pid) == os.SCHED_BATCH
        assert os.sched_getscheduler(proc.pid) == os.SCHED_OTHER
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out


def _metric(port: int, name: str) -> float | None:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_shipper_and_sampler_processes_report_on_the_proxys_metrics(tmp_path, canned, db_url):
    """The shipper and the sampler run in child processes; their counters used to stay in the child
    (``vlmwatch_shipper_samples_shipped_total`` 0 forever, the queue depth never exported)."""
    _, upstream = canned
    port = _free_port()
    proc = _start_proxy(tmp_path, upstream, port, env={"VLMWATCH_STORAGE__URL": db_url}, ship=True)
    try:
        assert _metric(port, 'vlmwatch_collector_queue_depth{source="proxy"}') == 0.0
        img = data_url(png_bytes(9, side=24))
        with httpx.Client(timeout=10) as c:
            for i in range(5):
                c.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat_body(f"ship {i}?", img)).raise_for_status()
        deadline = time.monotonic() + 30
        while (_metric(port, "vlmwatch_shipper_samples_shipped_total") or 0) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _metric(port, "vlmwatch_shipper_samples_shipped_total") == 5.0
        assert _metric(port, "vlmwatch_shipper_errors_total") == 0.0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
