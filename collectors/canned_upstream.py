"""A canned-response OpenAI-compatible server (not a model) for proxy tests and the benchmark.

It answers ``POST /v1/chat/completions`` with a fixed answer, as JSON or as an SSE stream when the
body asks for ``"stream": true`` (with made-up but fixed token log-probabilities, one per word,
when it asks for ``"logprobs": true``), and ``GET /v1/models``. The response id is derived from the
request body (``chatcmpl-<crc32><len>``), so the same request always gets byte-identical answers:
tests compare a proxied call with a direct one byte for byte. Request headers steer edge cases:

- ``x-canned-status: N`` answers status N with an OpenAI error body;
- ``x-canned-delay: S`` waits S seconds before answering;
- ``x-canned-close: 1`` closes the connection without answering;
- ``x-canned-chunked: 1`` sends the JSON answer with ``Transfer-Encoding: chunked``;
- ``x-canned-close-after: 1`` answers, then closes the connection (an idle keep-alive timeout).

Run it alone: ``python -m collectors.canned_upstream --listen 127.0.0.1:8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import zlib
from typing import Any

import httptools

__all__ = ["CannedUpstream", "ANSWER", "ANSWER_LOGPROBS", "start_canned", "response_id_for"]

ANSWER = "Yes, there is a cat in the image."
_TOKENS = [w if i == 0 else " " + w for i, w in enumerate(ANSWER.split(" "))]
ANSWER_LOGPROBS = [round(-0.05 * (i + 1) ** 1.5, 6) for i in range(len(_TOKENS))]  # one "token" per word


def _logprobs(tokens: list[str], values: list[float]) -> dict[str, Any]:
    return {"content": [{"token": t, "logprob": v, "bytes": list(t.encode()), "top_logprobs": []}
                        for t, v in zip(tokens, values)], "refusal": None}


def response_id_for(body: bytes) -> str:
    return f"chatcmpl-{zlib.crc32(body):08x}{len(body):x}"


def _json_completion(rid: str, model: str, logprobs: bool) -> bytes:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
    if logprobs:
        choice["logprobs"] = _logprobs(_TOKENS, ANSWER_LOGPROBS)
    return json.dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [choice],
            "usage": {"prompt_tokens": 10, "completion_tokens": 9, "total_tokens": 19},
        },
        separators=(",", ":"),
    ).encode()


def _sse_events(rid: str, model: str, logprobs: bool) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None, lps: dict[str, Any] | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if logprobs:
            choice["logprobs"] = lps
        d = {"id": rid, "object": "chat.completion.chunk", "created": 1700000000, "model": model, "choices": [choice]}
        return b"data: " + json.dumps(d, separators=(",", ":")).encode() + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""}, None)]
    events += [chunk({"content": t}, None, _logprobs([t], [v])) for t, v in zip(_TOKENS, ANSWER_LOGPROBS)]
    events += [chunk({}, "stop"), b"data: [DONE]\n\n"]
    return events


def _model_of(body: bytes) -> str:
    # cheap and good enough for a canned server: the model name sits early in the body
    i = body.find(b'"model"')
    if i < 0:
        return "canned"
    j = body.find(b'"', body.find(b":", i) + 1)
    k = body.find(b'"', j + 1)
    return body[j + 1 : k].decode("utf-8", "replace") if j > 0 and k > j else "canned"


class _Conn(asyncio.Protocol):
    def __init__(self, server: CannedUpstream) -> None:
        self.server = server
        self.parser: Any = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.queue: list[tuple[bytes, bytes, dict[bytes, bytes], bytes, bool]] = []
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.server.connections += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        item = (self.parser.get_method(), self.url, self.headers, b"".join(self.body), self.parser.should_keep_alive())
        self.server.requests.append(item[3])
        if self.busy or self.queue or b"x-canned-delay" in self.headers:
            self.queue.append(item)
            if not self.busy:
                self.busy = True
                asyncio.get_running_loop().create_task(self._drain())
        else:
            self._answer(*item)

    async def _drain(self) -> None:
        while self.queue:
            method, url, headers, body, keep = self.queue.pop(0)
            delay = float(headers.get(b"x-canned-delay", b"0") or 0)
            if delay:
                await asyncio.sleep(delay)
            if self.transport.is_closing():
                return
            self._answer(method, url, headers, body, keep)
        self.busy = False

    def _answer(self, method: bytes, url: bytes, headers: dict[bytes, bytes], body: bytes, keep: bool) -> None:
        t = self.transport
        if headers.get(b"x-canned-close") == b"1":
            t.close()
            return
        conn = b"keep-alive" if keep else b"close"
        path = url.split(b"?", 1)[0]
        status = int(headers.get(b"x-canned-status", b"200"))
        if path == b"/v1/models" and method == b"GET":
            payload = json.dumps({"object": "list", "data": [{"id": "canned", "object": "model"}]}).encode()
            self._send(200, b"application/json", payload, conn)
        elif path != b"/v1/chat/completions" or method != b"POST":
            self._send(404, b"application/json", b'{"error":{"message":"not found","code":404}}', conn)
        elif status != 200:
            err = json.dumps({"error": {"message": f"canned error {status}", "type": "canned", "code": status}})
            self._send(status, b"application/json", err.encode(), conn)
        else:
            rid, model = response_id_for(body), _model_of(body)
            logprobs = b'"logprobs":true' in body or b'"logprobs": true' in body
            if b'"stream":true' in body or b'"stream": true' in body:
                t.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                    b"Transfer-Encoding: chunked\r\nConnection: " + conn + b"\r\n\r\n"
                )
                for ev in _sse_events(rid, model, logprobs):
                    t.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                t.write(b"0\r\n\r\n")
            elif headers.get(b"x-canned-chunked") == b"1":
                payload = _json_completion(rid, model, logprobs)
                half = len(payload) // 2
                t.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                    b"Connection: " + conn + b"\r\n\r\n"
                )
                for part in (payload[:half], payload[half:]):
                    t.write(b"%x\r\n%s\r\n" % (len(part), part))
                t.write(b"0\r\n\r\n")
            else:
                self._send(200, b"application/json", _json_completion(rid, model, logprobs), conn)
        if not keep or headers.get(b"x-canned-close-after") == b"1":
            t.close()  # like an idle keep-alive timeout: the connection just goes away

    def _send(self, status: int, ctype: bytes, payload: bytes, conn: bytes) -> None:
        reason = {200: b"OK", 404: b"Not Found"}.get(status, b"Status")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s"
            % (status, reason, ctype, len(payload), conn, payload)
        )


class CannedUpstream:
    """The server object; ``requests`` keeps the body of every request received (tests)."""

    def __init__(self, keep_requests: bool = True) -> None:
        self.requests: list[bytes] = [] if keep_requests else _Discard()
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), host, port, backlog=4096)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        pass


def start_canned(host: str = "127.0.0.1", port: int = 0) -> tuple[CannedUpstream, int, Any]:
    """Run a canned server on a background thread's event loop: ``(server, port, stop)``."""
    import threading

    loop = asyncio.new_event_loop()
    srv = CannedUpstream()
    got: dict[str, int] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        got["port"] = loop.run_until_complete(srv.start(host, port))
        ready.set()
        loop.run_forever()

    th = threading.Thread(target=run, name="canned-upstream", daemon=True)
    th.start()
    ready.wait(10)

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)

    return srv, got["port"], stop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:8000")
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")

    async def run() -> None:
        srv = CannedUpstream(keep_requests=False)
        await srv.start(host, int(port))
        await asyncio.Event().wait()

    import uvloop

    uvloop.run(run())


if __name__ == "__main__":
    main()
