"""The proxy's request path: an asyncio protocol pair that relays bytes verbatim.

Each client connection gets its own upstream connection (opened on its first request, reopened
after the upstream closes an idle one), so keep-alive and pipelining behave exactly as with the
upstream itself. Both directions are parsed with httptools only to *observe* message boundaries:
the bytes written are the bytes read, in the same order, unchanged. Parsing feeds the sampler:
a CRC of the request body (the sampling hash) and, for sampling candidates, the request and
response bodies, handed to the worker with ``put_nowait`` once the response is complete.

If parsing ever fails (a malformed message, ``HEAD``, an upgrade), the connection turns into a
blind byte tunnel: the relay goes on, sampling stops for that connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httptools

from collectors.metrics import CONTENT_TYPE_LATEST, CollectorMetrics
from collectors.sampling import SamplingPolicy, crc32_update, hash_fraction

__all__ = ["ClientConnection", "Exchange", "RelaySettings", "error_response"]

log = logging.getLogger(__name__)

_NONE, _CONNECTING, _CONNECTED, _FAILED = range(4)
_BUFFER_LIMIT = 1 << 20  # pause reading a side whose peer buffers more than this


def error_response(status: int, reason: str, message: str, kind: str) -> bytes:
    """The only kind of response the proxy makes itself: OpenAI's error shape, connection closed."""
    import json

    body = json.dumps(
        {"error": {"message": f"vlmwatch proxy: {message}", "type": kind, "code": status}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\nX-Vlmwatch-Proxy: error\r\n\r\n"
    ).encode()
    return head + body


@dataclass(frozen=True)
class RelaySettings:
    """What the relay needs from the proxy that runs it (built by :class:`collectors.proxy.ProxyServer`)."""

    upstream_url: str  # for messages; ``upstream_host``/``upstream_port`` are where it connects
    upstream_host: str
    upstream_port: int
    connect_timeout: float
    read_timeout: float
    max_body_bytes: int  # a candidate's request or response body over this is not kept
    route_names: Mapping[bytes, str]  # sampled request paths -> route name
    metrics_path: bytes  # answered locally on a connection that starts with ``GET <path>``; b"": none
    policy: SamplingPolicy
    metrics: CollectorMetrics
    hand_off: Callable[[Exchange], None]  # a complete candidate exchange, to the sampling worker
    metrics_prefix: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics_prefix", b"GET " + self.metrics_path if self.metrics_path else b"")


class Exchange:
    """One request/response pair as observed on the wire."""

    __slots__ = (
        "t0", "url", "route", "sampling", "crc", "size", "chunks", "too_large", "fraction", "candidate",
        "status", "resp_started", "resp_chunks", "resp_size", "content_type", "content_encoding", "local",
    )

    def __init__(self) -> None:
        self.t0 = time.time()
        self.url = b""
        self.route = ""
        self.sampling = False
        self.crc = 0
        self.size = 0
        self.chunks: list[bytes] | None = []
        self.too_large = False
        self.fraction = 1.0
        self.candidate = False
        self.status = 0
        self.resp_started = False
        self.resp_chunks: list[bytes] | None = []
        self.resp_size = 0
        self.content_type = b""
        self.content_encoding = b""
        self.local = False


class _Upstream(asyncio.Protocol):
    """Upstream side: write bytes to the client first, then observe them."""

    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.parser: Any = httptools.HttpResponseParser(self)
        self.ex: Exchange | None = None
        self.info = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.set_write_buffer_limits(high=_BUFFER_LIMIT)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        c = self.client
        c.transport.write(data)
        c.last_up = c.loop.time()
        if not c.blind:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                c.go_blind("upgrade")
            except httptools.HttpParserError as e:
                c.go_blind(f"unparseable upstream response ({e})")

    # httptools callbacks
    def on_message_begin(self) -> None:
        c = self.client
        self.ex = c.inflight[0] if c.inflight else None
        if self.ex is not None:
            self.ex.resp_started = True

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.ex
        if ex is not None and ex.candidate:
            lname = name.lower()
            if lname == b"content-type":
                ex.content_type = value
            elif lname == b"content-encoding":
                ex.content_encoding = value

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.info = 100 <= status < 200
        if self.ex is not None and not self.info:
            self.ex.status = status

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        if ex is not None and ex.candidate and ex.resp_chunks is not None:
            ex.resp_size += len(body)
            if ex.resp_size > self.client.relay.max_body_bytes:
                ex.resp_chunks = None
                ex.too_large = True
            else:
                ex.resp_chunks.append(body)

    def on_message_complete(self) -> None:
        if self.info:  # 100 Continue: the final response follows
            self.info = False
            return
        c = self.client
        ex = self.ex
        self.ex = None
        if ex is not None and c.inflight and c.inflight[0] is ex:
            c.inflight.popleft()
            c.response_done(ex)

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost(self, exc)


class ClientConnection(asyncio.Protocol):
    """Client side of one proxied connection."""

    def __init__(self, relay: RelaySettings, loop: asyncio.AbstractEventLoop,
                 connections: set[ClientConnection]) -> None:
        self.relay = relay
        self.loop = loop
        self.connections = connections  # the proxy's open connections (its sweeper and shutdown)
        self.transport: Any = None
        self.parser: Any = httptools.HttpRequestParser(self)
        self.cur: Exchange | None = None
        self.inflight: deque[Exchange] = deque()
        self.blind = False
        self.state = _NONE
        self.up: Any = None
        self.up_proto: _Upstream | None = None
        self.pending: list[bytes] = []
        self.last_up = 0.0
        self.local_mode = False
        self.closing = False
        self.fail_msg = ""

    # connection events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=_BUFFER_LIMIT)  # type: ignore[attr-defined]
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.connections.discard(self)
        if self.up is not None:
            self.up.close()  # the client is gone: let the upstream stop generating
        self.inflight.clear()

    def eof_received(self) -> bool | None:
        # like nginx (proxy_ignore_client_abort off): a client that closes its side has gone away;
        # closing the upstream connection lets the model server stop generating for it
        return None

    def pause_writing(self) -> None:
        if self.up is not None:
            self.up.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None:
            self.up.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.blind:
            self._forward(data)
            return
        relay = self.relay
        if (
            relay.metrics_prefix
            and self.cur is None
            and not self.inflight
            and data.startswith(relay.metrics_prefix)
        ):
            self.local_mode = True
        local = self.local_mode
        if not local:
            self._forward(data)  # relay first: observing the bytes must not delay them
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.go_blind("upgrade")
        except httptools.HttpParserError as e:
            if local:
                self.transport.close()
                return
            self.go_blind(f"unparseable client request ({e})")
        if local and self.cur is None:
            self.local_mode = False

    # request parsing callbacks
    def on_message_begin(self) -> None:
        self.cur = Exchange()

    def on_url(self, url: bytes) -> None:
        if self.cur is not None:
            self.cur.url += url

    def on_headers_complete(self) -> None:
        ex = self.cur
        if ex is None:
            return
        relay = self.relay
        method = self.parser.get_method()
        path = ex.url.split(b"?", 1)[0]
        if self.local_mode:
            ex.local = True
            return
        if method == b"HEAD" or method == b"CONNECT":  # no body despite Content-Length / a tunnel
            self.go_blind(method.decode())
            return
        ex.route = relay.route_names.get(path, "")
        if ex.route and method == b"POST":
            ex.sampling = True
        self.inflight.append(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.cur
        if ex is None or not ex.sampling:
            return
        ex.crc = crc32_update(ex.crc, body)
        ex.size += len(body)
        if ex.chunks is not None:
            if ex.size > self.relay.max_body_bytes:
                ex.chunks = None
                ex.too_large = True
            else:
                ex.chunks.append(body)

    def on_message_complete(self) -> None:
        ex = self.cur
        self.cur = None
        if ex is None:
            return
        relay = self.relay
        if ex.local:
            self._answer_locally(ex)
            return
        relay.metrics.request(ex.route or "other")
        if ex.sampling:
            ex.fraction = hash_fraction(ex.crc, ex.size)
            if relay.policy.maybe(ex.fraction):
                ex.candidate = True
            else:
                relay.metrics.drop("sampled_out")
        if self.state == _FAILED:
            self._send_failure()

    # relay
    def _forward(self, data: bytes) -> None:
        state = self.state
        if state == _CONNECTED:
            self.up.write(data)
            self.last_up = self.loop.time()
        elif state == _FAILED:
            return
        else:
            self.pending.append(data)
            if state == _NONE:
                self.state = _CONNECTING
                self.last_up = self.loop.time()
                self.loop.create_task(self._connect())
            if sum(map(len, self.pending)) > _BUFFER_LIMIT:
                self.transport.pause_reading()

    async def _connect(self) -> None:
        relay = self.relay
        try:
            up, proto = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Upstream(self), relay.upstream_host, relay.upstream_port),
                relay.connect_timeout,
            )
        except (OSError, asyncio.TimeoutError) as e:
            what = "timed out" if isinstance(e, asyncio.TimeoutError) else str(e) or type(e).__name__
            relay.metrics.upstream_errors.labels("connect").inc()
            log.warning("upstream %s unreachable: %s", relay.upstream_url, what)
            self.fail(f"upstream {relay.upstream_url} unreachable ({what})")
            return
        if self.closing:
            up.close()
            return
        self.up, self.up_proto = up, proto
        self.state = _CONNECTED
        data, self.pending = b"".join(self.pending), []
        if data:
            up.write(data)
        self.last_up = self.loop.time()
        self.transport.resume_reading()

    def fail(self, message: str) -> None:
        """The upstream cannot answer: 502 for the waiting request, then close the connection."""
        self.state = _FAILED
        self.pending = []
        self.fail_msg = message
        if self.up is not None:
            self.up.abort()
        if self.inflight and self.inflight[0].resp_started:
            self.transport.close()  # half an answer is already out: only closing is honest
            return
        self.transport.resume_reading()
        if self.cur is None:  # otherwise on_message_complete sends it once the request is read
            self._send_failure()

    def _send_failure(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.transport.write(error_response(502, "Bad Gateway", self.fail_msg, "upstream_unavailable"))
        self.transport.close()

    def upstream_lost(self, proto: _Upstream, exc: Exception | None) -> None:
        if proto is not self.up_proto:
            return
        self.up, self.up_proto = None, None
        if self.state == _FAILED or self.closing:
            return
        if self.blind:
            self.transport.close()
            return
        if self.inflight or self.cur is not None:
            self.relay.metrics.upstream_errors.labels("closed").inc()
            self.fail(f"upstream {self.relay.upstream_url} closed the connection before answering"
                      + (f" ({exc})" if exc else ""))
            return
        self.state = _NONE  # an idle keep-alive connection closed by the upstream: reopen on demand

    def timed_out(self, now: float) -> bool:
        """Called by the proxy's sweeper; True if the upstream stayed silent too long."""
        if not self.inflight or self.state != _CONNECTED or self.blind or self.cur is not None:
            return False
        if now - self.last_up < self.relay.read_timeout:
            return False
        self.relay.metrics.upstream_errors.labels("timeout").inc()
        log.warning("upstream %s silent for %.0f s; answering 502", self.relay.upstream_url, now - self.last_up)
        self.fail(f"upstream {self.relay.upstream_url} did not answer within {self.relay.read_timeout:g} s")
        return True

    def response_done(self, ex: Exchange) -> None:
        if ex.candidate:
            self.relay.hand_off(ex)

    def go_blind(self, why: str) -> None:
        if not self.blind:
            log.debug("connection becomes a blind tunnel: %s", why)
            self.blind = True
            self.inflight.clear()
            self.cur = None

    def _answer_locally(self, ex: Exchange) -> None:
        relay = self.relay
        path = ex.url.split(b"?", 1)[0]
        if path == relay.metrics_path and self.parser.get_method() == b"GET":
            body = relay.metrics.render()
            status = "200 OK"
            ctype = CONTENT_TYPE_LATEST
        else:
            body = b"only GET /metrics is answered on a connection that starts with it\n"
            status = "404 Not Found"
            ctype = "text/plain"
        keep = self.parser.should_keep_alive()
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        if not keep:
            self.transport.close()
