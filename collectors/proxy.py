"""The sidecar proxy: a uvloop + httptools byte relay in front of an OpenAI-compatible server.

Chosen by measurement (see ``bench/proxy_overhead.py`` and issue 8): relaying bytes verbatim
through asyncio protocols costs a fraction of the CPU of an ASGI or aiohttp proxy and keeps the
added p99 well under a millisecond at 1,000 req/s on two cores. The request path is in
:mod:`collectors.proxy_relay`, which gets a :class:`RelaySettings` of its own and imports nothing
from here; this module wires it to the sampling pipeline and runs it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import urlsplit

from collectors.exchange import RawExchange, build_sample
from collectors.metrics import CollectorMetrics
from collectors.proxy_relay import ClientConnection, Exchange, RelaySettings
from collectors.sample import CollectedSample
from collectors.sampling import DEFAULT_ROUTE, SamplingPolicy

__all__ = ["ProxyServer", "ExchangeSink", "parse_upstream", "parse_listen", "exchange_builder", "serve", "SAMPLED_ROUTES"]

log = logging.getLogger(__name__)

SAMPLED_ROUTES = (DEFAULT_ROUTE, "/chat/completions")


def parse_upstream(url: str) -> tuple[str, int]:
    """``http://host:port`` -> ``(host, port)``; the relay forwards paths unchanged, so no prefix."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"upstream URL {url!r}: only http:// is supported (the proxy relays bytes verbatim)")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"upstream URL {url!r} must not have a path: requests are relayed with their own path")
    if not parts.hostname:
        raise ValueError(f"upstream URL {url!r} has no host")
    return parts.hostname, parts.port or 80


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` -> ``(host, port)``."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {listen!r} must look like HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def exchange_builder(policy: SamplingPolicy, max_image_bytes: int) -> Any:
    """The worker-side half of the proxy: wire bytes of one exchange -> a sample."""

    def build(ex: Exchange) -> CollectedSample:
        raw = RawExchange(
            ts=datetime.fromtimestamp(ex.t0, timezone.utc),
            route=ex.route,
            fraction=ex.fraction,
            request_body=b"".join(ex.chunks or ()),
            status=ex.status,
            response_body=b"".join(ex.resp_chunks or ()),
            content_type=ex.content_type.decode("latin-1"),
            content_encoding=ex.content_encoding.decode("latin-1"),
            too_large=ex.too_large,
        )
        return build_sample(raw, policy, max_image_bytes=max_image_bytes, source="proxy")

    return build


class ExchangeSink(Protocol):
    """Where candidate exchanges go: a :class:`Pipeline` (thread) or a ``SamplerClient`` (process)."""

    def offer(self, ex: Any) -> Any: ...


class ProxyServer:
    def __init__(
        self,
        upstream_url: str,
        *,
        policy: SamplingPolicy,
        pipeline: ExchangeSink | None,
        metrics: CollectorMetrics,
        connect_timeout: float = 5.0,
        read_timeout: float = 600.0,
        max_body_bytes: int = 25_000_000,
        routes: Iterable[str] = SAMPLED_ROUTES,
        metrics_path: str = "/metrics",
    ) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        upstream_host, upstream_port = parse_upstream(upstream_url)
        self.policy = policy
        self.pipeline = pipeline
        self.metrics = metrics
        self.relay = RelaySettings(
            upstream_url=self.upstream_url, upstream_host=upstream_host, upstream_port=upstream_port,
            connect_timeout=connect_timeout, read_timeout=read_timeout, max_body_bytes=max_body_bytes,
            route_names={r.encode(): r for r in routes}, metrics_path=metrics_path.encode(),
            policy=policy, metrics=metrics, hand_off=self.hand_off,
        )
        self.connections: set[ClientConnection] = set()
        self.loop: Any = None
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def hand_off(self, ex: Exchange) -> None:
        if self.pipeline is not None:
            self.pipeline.offer(ex)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the bound address (``port=0`` picks a free one)."""
        self.loop = asyncio.get_running_loop()
        starter = getattr(self.pipeline, "start", None)
        if starter is not None:  # a sampler process is started from inside the loop
            await starter()
        self._server = await self.loop.create_server(
            lambda: ClientConnection(self.relay, self.loop, self.connections), host, port, backlog=4096, reuse_address=True
        )
        self._sweeper = self.loop.create_task(self._sweep())
        addr = self._server.sockets[0].getsockname()
        log.info("proxy listening on %s:%d -> %s", addr[0], addr[1], self.upstream_url)
        return addr[0], addr[1]

    async def _sweep(self) -> None:
        period = min(1.0, max(0.05, self.relay.read_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            for conn in list(self.connections):
                try:
                    conn.timed_out(now)
                except Exception:  # one broken connection must not stop the sweeper
                    log.exception("timeout sweep failed for a connection")

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight exchanges finish within ``grace``, then close the rest."""
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace
        while self.loop.time() < deadline and any(c.inflight or c.cur for c in self.connections):
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()


async def _serve(server: ProxyServer, host: str, port: int, ready: Any = None) -> None:
    await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    gc.freeze()  # start-up objects never need scanning again: shorter collections under load
    await stop.wait()
    log.info("proxy shutting down")
    await server.close()


def serve(server: ProxyServer, host: str, port: int, ready: Any = None) -> None:
    """Run the proxy on uvloop until SIGINT/SIGTERM."""
    import uvloop

    if not hasattr(server.pipeline, "start"):
        # a sampling worker *thread* must not hold the GIL for the default 5 ms while a request waits
        sys.setswitchinterval(0.0005)
    uvloop.run(_serve(server, host, port, ready))
