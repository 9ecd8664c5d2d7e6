"""The proxy's sampling worker as a separate process, so its CPU work never holds the proxy's GIL.

A worker *thread* shares the interpreter lock with the event loop: a JSON parse or base64 decode
in it delays whichever request wakes up meanwhile. Here the event loop only writes each candidate
exchange (framed bytes) to a Unix socket pair with its non-blocking transport; when the transport
already buffers more than ``max_buffer`` bytes the sample is dropped (``queue_full``) — that buffer
is the bounded hand-off queue. The worker process rebuilds the exchange, runs the same
:class:`~collectors.pipeline.Pipeline` (build, redact, spool with fsync) and reports its counters
back over the same socket, so the proxy's ``/metrics`` shows every drop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from collectors.metrics import CollectorMetrics

__all__ = ["SamplerClient", "start_sampler", "main"]

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<4sIII")  # magic, meta length, request body length, response body length
_MAGIC = b"VWX1"


class _Proto(asyncio.Protocol):
    def __init__(self, client: SamplerClient) -> None:
        self.client = client
        self.buf = b""

    def data_received(self, data: bytes) -> None:  # counter deltas, one JSON object a line
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            try:
                self.client.apply(json.loads(line))
            except ValueError:
                log.error("sampler worker sent an unreadable report line")

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost()


class SamplerClient:
    """Proxy side: ``offer(exchange)`` never blocks; drops are counted."""

    def __init__(self, metrics: CollectorMetrics, args: list[str], max_buffer: int = 32 * 1024 * 1024) -> None:
        self.metrics = metrics
        self.args = args
        self.max_buffer = max_buffer
        self.transport: Any = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._restart_at = 0.0
        self._loop: Any = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collectors.sampler_process", "--fd", str(theirs.fileno()), *self.args],
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        self.transport, _ = await self._loop.create_unix_connection(lambda: _Proto(self), sock=ours)
        self.transport.set_write_buffer_limits(high=self.max_buffer)
        log.info("sampler worker process %d started", self.proc.pid)

    def offer(self, ex: Any) -> None:
        t = self.transport
        if t is None or t.is_closing():
            self.metrics.drop("internal_error")
            dead = self.proc is None or self.proc.poll() is not None
            if dead and self._loop is not None and time.monotonic() >= self._restart_at:
                self._restart_at = time.monotonic() + 5.0
                self._loop.create_task(self.start())
            return
        if t.get_write_buffer_size() > self.max_buffer:
            self.metrics.drop("queue_full")
            return
        meta = json.dumps({
            "t0": ex.t0, "route": ex.route, "fraction": ex.fraction, "status": ex.status,
            "ctype": ex.content_type.decode("latin-1"), "cenc": ex.content_encoding.decode("latin-1"),
            "too_large": ex.too_large,
        }).encode()
        req = ex.chunks or ()
        resp = ex.resp_chunks or ()
        head = _FRAME.pack(_MAGIC, len(meta), sum(map(len, req)), sum(map(len, resp)))
        t.writelines([head, meta, *req, *resp])

    def apply(self, report: dict[str, Any]) -> None:
        for reason, n in report.get("drop", {}).items():
            self.metrics.drop(reason, n)
        if report.get("spooled"):
            self.metrics.spooled.labels(self.metrics.source).inc(report["spooled"])
        if "spool_bytes" in report:
            self.metrics.spool_bytes.labels(self.metrics.source).set(report["spool_bytes"])
        if "queue_depth" in report:  # the worker's hand-off queue (the socket buffer is counted by queue_full)
            self.metrics.queue_depth.labels(self.metrics.source).set(report["queue_depth"])

    def lost(self) -> None:
        self.transport = None
        if self.proc is not None and self.proc.poll() is None:
            return
        log.error("sampler worker process exited (%s); samples are dropped until it restarts",
                  self.proc.returncode if self.proc else "never started")

    def close(self, timeout: float = 10.0) -> None:
        """Let the worker finish what it received (EOF), then wait for it."""
        if self.transport is not None:
            self.transport.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_sampler(metrics: CollectorMetrics, *, spool_dir: str, lane: str, spool_max_bytes: int,
                  sample_rate: float, rates: dict[str, float], max_image_bytes: int, redact_hook: str,
                  queue_size: int, log_level: str = "WARNING", nice: int = 10) -> SamplerClient:
    args = ["--spool", spool_dir, "--lane", lane, "--max-bytes", str(spool_max_bytes),
            "--rate", str(sample_rate), "--rates", json.dumps(rates), "--max-image-bytes", str(max_image_bytes),
            "--redact", redact_hook, "--queue-size", str(queue_size), "--log-level", log_level, "--nice", str(nice)]
    return SamplerClient(metrics, args)


# --- worker process ---------------------------------------------------------------------------------
def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def main(argv: list[str] | None = None) -> int:
    from datetime import datetime, timezone

    from collectors.exchange import RawExchange, build_sample
    from collectors.pipeline import Pipeline, load_redactor
    from collectors.priority import become_background
    from collectors.sampling import SamplingPolicy
    from collectors.spool import SpoolBusy, SpoolWriter

    ap = argparse.ArgumentParser()
    for name in ("--fd", "--spool", "--lane", "--max-bytes", "--rate", "--rates", "--max-image-bytes", "--redact",
                 "--queue-size", "--log-level", "--nice"):
        ap.add_argument(name, required=True)
    a = ap.parse_args(argv)
    become_background(int(a.nice))  # before any thread starts: they inherit it
    import storage.images  # noqa: F401 - imported now, not on the first sample while traffic flows
    logging.basicConfig(level=a.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=int(a.fd))
    policy = SamplingPolicy(float(a.rate), json.loads(a.rates))
    metrics = CollectorMetrics("proxy")
    deadline = time.monotonic() + 60
    while True:  # after a kill -9 of the proxy, its old worker may still be finishing this lane
        try:
            writer = SpoolWriter(a.spool, a.lane, max_bytes=int(a.max_bytes),
                                 on_drop=lambda n: metrics.drop("spool_full", n))
            break
        except SpoolBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    max_image = int(a.max_image_bytes)

    def build(frame: tuple[dict[str, Any], bytes, bytes]) -> Any:
        meta, req, resp = frame
        raw = RawExchange(ts=datetime.fromtimestamp(meta["t0"], timezone.utc), route=meta["route"],
                          fraction=meta["fraction"], request_body=req, status=meta["status"], response_body=resp,
                          content_type=meta["ctype"], content_encoding=meta["cenc"], too_large=meta["too_large"])
        return build_sample(raw, policy, max_image_bytes=max_image, source="proxy")

    pipeline = Pipeline(build=build, sink=writer, metrics=metrics, queue_size=int(a.queue_size),
                        redact=load_redactor(a.redact), name="proxy-sampler")
    lock = threading.Lock()
    sent: dict[str, float] = {}
    stop = threading.Event()

    def report() -> None:  # counter deltas back to the proxy, four times a second
        while not stop.wait(0.25):
            send_report()

    def send_report() -> None:
        with lock:
            drops = {}
            for reason in list(metrics._drop_children):
                v = metrics.dropped_count(reason)
                if v != sent.get(reason, 0.0):
                    drops[reason] = v - sent.get(reason, 0.0)
                    sent[reason] = v
            spooled = metrics.spooled.labels("proxy")._value.get()
            d_spooled = spooled - sent.get("_spooled", 0.0)
            sent["_spooled"] = spooled
            depth = pipeline.queue_depth()
            if drops or d_spooled or depth != sent.get("_depth", 0):
                sent["_depth"] = depth
                msg = {"drop": drops, "spooled": d_spooled, "spool_bytes": writer.total_bytes, "queue_depth": depth}
                try:
                    sock.sendall(json.dumps(msg).encode() + b"\n")
                except OSError:
                    pass

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    while True:
        head = _recv_exact(sock, _FRAME.size)
        if head is None:
            break
        magic, n_meta, n_req, n_resp = _FRAME.unpack(head)
        if magic != _MAGIC:
            log.error("sampler worker: bad frame from the proxy; stopping")
            break
        body = _recv_exact(sock, n_meta + n_req + n_resp)
        if body is None:
            break
        pipeline.offer((json.loads(body[:n_meta]), body[n_meta:n_meta + n_req], body[n_meta + n_req:]))
    pipeline.close(timeout=30)  # the proxy is gone (or stopping): finish what was handed over
    writer.close()
    stop.set()
    reporter.join(1)
    send_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
