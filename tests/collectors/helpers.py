"""Helpers for collector tests (imported as ``tests.collectors.helpers``)."""

from __future__ import annotations

import asyncio
import base64
import io
import random
import threading
from pathlib import Path
from typing import Any

from collectors.metrics import CollectorMetrics
from collectors.pipeline import Pipeline
from collectors.proxy import ProxyServer, exchange_builder
from collectors.sample import CollectedSample
from collectors.sampling import SamplingPolicy
from collectors.spool import SpoolReader, SpoolWriter


def png_bytes(seed: int = 0, side: int = 160) -> bytes:
    """A real PNG of noise (~77 KB at side=160: a ~100 KB data URL)."""
    from PIL import Image

    rng = random.Random(seed)
    img = Image.frombytes("RGB", (side, side), bytes(rng.getrandbits(8) for _ in range(side * side * 3)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def chat_body(prompt: str, image_url: str, model: str = "llava-fixture", stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": image_url}}],
            }
        ],
        "max_tokens": 16,
        "stream": stream,
    }


class RunningProxy:
    """A ProxyServer on its own uvloop thread, sampling into a spool lane."""

    def __init__(self, upstream_url: str, spool_root: Path, *, rate: float = 1.0, rates: dict[str, float] | None = None,
                 queue_size: int = 1000, max_body_bytes: int = 25_000_000, read_timeout: float = 600.0,
                 connect_timeout: float = 2.0, redact: Any = None, max_image_bytes: int = 20_000_000) -> None:
        import uvloop

        self.metrics = CollectorMetrics("proxy")
        self.policy = SamplingPolicy(rate, rates or {})
        self.spool_root = spool_root
        self.writer = SpoolWriter(spool_root, "proxy", max_bytes=100_000_000)
        self.pipeline = Pipeline(build=exchange_builder(self.policy, max_image_bytes), sink=self.writer,
                                 metrics=self.metrics, queue_size=queue_size, redact=redact, name="proxy")
        self.server = ProxyServer(upstream_url, policy=self.policy, pipeline=self.pipeline, metrics=self.metrics,
                                  max_body_bytes=max_body_bytes, read_timeout=read_timeout,
                                  connect_timeout=connect_timeout)
        self.loop = uvloop.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            _, self.port = self.loop.run_until_complete(self.server.start("127.0.0.1", 0))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def _settle(self) -> None:
        """Wait for the proxy's loop to finish the callback it is in: the relay writes the last bytes
        to the client *before* it parses them and hands the exchange off, so a client can be done
        while its exchange is still a few microseconds from the pipeline."""
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(10)

    def samples(self) -> list[CollectedSample]:
        self._settle()
        assert self.pipeline.flush(10)
        reader = SpoolReader(self.spool_root, "proxy")
        try:
            payloads, _ = reader.read(max_records=100_000)
        finally:
            reader.close()
        return [CollectedSample.from_bytes(p) for p in payloads]

    def dropped(self, reason: str) -> float:
        self._settle()
        self.pipeline.flush(10)
        return self.metrics.dropped_count(reason)

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.server.close(grace=1.0), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.pipeline.close()
        self.writer.close()


class RawResponse:
    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def raw_http(port: int, data: bytes | list[bytes], n_responses: int = 1, timeout: float = 10.0,
             pause: float = 0.0) -> tuple[list[RawResponse], bytes]:
    """Send bytes on one TCP connection (a list: separate writes) and read ``n_responses``.

    Returns the parsed responses and every byte received, so tests can compare wire bytes.
    """
    import socket
    import time

    import httptools

    responses: list[RawResponse] = []

    class P:
        def on_message_begin(self) -> None:
            responses.append(RawResponse())

        def on_header(self, name: bytes, value: bytes) -> None:
            responses[-1].headers.append((name, value))

        def on_headers_complete(self) -> None:
            responses[-1].status = parser.get_status_code()

        def on_body(self, body: bytes) -> None:
            responses[-1].body += body

        def on_message_complete(self) -> None:
            responses[-1].complete = True

    parser = httptools.HttpResponseParser(P())
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        for part in [data] if isinstance(data, bytes) else data:
            s.sendall(part)
            if pause:
                time.sleep(pause)
        deadline = time.monotonic() + timeout
        while sum(r.complete for r in responses) < n_responses and time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
            parser.feed_data(chunk)
    return responses, received


def post(body: bytes, path: str = "/v1/chat/completions", extra: str = "", chunked: bool = False) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{extra}"
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
