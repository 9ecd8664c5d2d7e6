"""Fixtures for collector tests: a canned upstream and a running proxy, both real servers on loopback."""

from __future__ import annotations

import asyncio
import base64
import io
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors.canned_upstream import start_canned
from collectors.metrics import CollectorMetrics
from collectors.pipeline import Pipeline
from collectors.proxy import ProxyServer, exchange_builder
from collectors.sampling import SamplingPolicy
from collectors.spool import SpoolReader, SpoolWriter
from collectors.sample import CollectedSample


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


@pytest.fixture(scope="session")
def png() -> bytes:
    return png_bytes(1)


@pytest.fixture
def canned() -> Iterator[tuple[Any, int]]:
    srv, port, stop = start_canned()
    yield srv, port
    stop()


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

    def samples(self) -> list[CollectedSample]:
        assert self.pipeline.flush(10)
        reader = SpoolReader(self.spool_root, "proxy")
        try:
            payloads, _ = reader.read(max_records=100_000)
        finally:
            reader.close()
        return [CollectedSample.from_json(p) for p in payloads]

    def dropped(self, reason: str) -> float:
        self.pipeline.flush(10)
        return self.metrics.dropped_count(reason)

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.server.close(grace=1.0), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.pipeline.close()
        self.writer.close()


@pytest.fixture
def make_proxy(tmp_path: Path) -> Iterator[Any]:
    made: list[RunningProxy] = []

    def make(upstream_url: str, **kw: Any) -> RunningProxy:
        p = RunningProxy(upstream_url, tmp_path / f"spool{len(made)}", **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
