"""HTTP edge cases of the byte relay: chunked bodies, keep-alive, pipelining, upstream failures,
bad input (the upstream receives exactly what the client sent; the sample is dropped, counted)."""

from __future__ import annotations

import base64
import json
import socket
import time

import openai
import pytest

from tests.collectors.helpers import chat_body, chunk, data_url, png_bytes, post, raw_http


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _same_on_wire(port_direct: int, port_proxy: int, data, n: int = 1, **kw):
    d, d_raw = raw_http(port_direct, data, n, **kw)
    p, p_raw = raw_http(port_proxy, data, n, **kw)
    assert len(p) == len(d) == n and all(r.complete for r in p)
    assert p_raw == d_raw
    return p


def test_chunked_request_body_is_relayed_and_sampled(canned, make_proxy, png):
    srv, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    body = json.dumps(chat_body("chunked?", data_url(png))).encode()
    parts = [post(b"", chunked=True)] + [chunk(body[i:i + 30000]) for i in range(0, len(body), 30000)] + [b"0\r\n\r\n"]
    (resp,) = _same_on_wire(port, proxy.port, parts, pause=0.01)
    assert resp.status == 200
    assert srv.requests[-1] == srv.requests[-2] == body  # the upstream de-chunked the same body both times
    (s,) = proxy.samples()
    assert s.prompt == "chunked?" and s.image.data == png


def test_chunked_response_body_passes_through(canned, make_proxy, png):
    _, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    body = json.dumps(chat_body("chunked answer?", data_url(png))).encode()
    (resp,) = _same_on_wire(port, proxy.port, post(body, extra="x-canned-chunked: 1\r\n"))
    assert resp.header(b"transfer-encoding") == b"chunked"
    (s,) = proxy.samples()
    assert s.response_id == json.loads(resp.body)["id"]


def test_keep_alive_carries_many_requests_on_one_upstream_connection(canned, make_proxy):
    srv, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    img = data_url(png_bytes(2, side=16))
    bodies = [json.dumps(chat_body(f"q{i}", img, stream=i % 2 == 1)).encode() for i in range(6)]
    before = srv.connections
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.settimeout(5)
        for b in bodies:  # one request at a time, waiting for each answer
            s.sendall(post(b))
            buf = b""
            while not (buf.endswith(b"0\r\n\r\n") or (b"Content-Length" in buf and buf.endswith(b"}}"))):
                buf += s.recv(65536)
            assert buf.startswith(b"HTTP/1.1 200 OK")
    assert srv.connections - before == 1
    assert sorted(x.prompt for x in proxy.samples()) == [f"q{i}" for i in range(6)]


def test_upstream_closing_an_idle_connection_is_reopened_for_the_next_request(canned, make_proxy):
    srv, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    body = json.dumps(chat_body("again?", "http://example.invalid/x.png")).encode()
    before = srv.connections
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.settimeout(5)
        for _ in range(3):  # the upstream drops the connection after each answer
            s.sendall(post(body, extra="x-canned-close-after: 1\r\n"))
            buf = b""
            while not buf.endswith(b"}}"):
                buf += s.recv(65536)
            assert buf.startswith(b"HTTP/1.1 200 OK")
            time.sleep(0.1)
    assert srv.connections - before == 3  # one client connection, three upstream connections
    assert len(proxy.samples()) == 3


def test_pipelined_requests_answered_in_order(canned, make_proxy):
    _, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    img = data_url(png_bytes(2, side=16))
    data = b"".join(post(json.dumps(chat_body(f"p{i}", img)).encode()) for i in range(3))
    data += b"GET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n"
    resps = _same_on_wire(port, proxy.port, data, n=4)
    assert [r.status for r in resps] == [200, 200, 200, 200]
    assert sorted(x.prompt for x in proxy.samples()) == ["p0", "p1", "p2"]


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_upstream_errors_pass_through(canned, make_proxy, status):
    _, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    body = json.dumps(chat_body("err?", data_url(png_bytes(2, side=16)))).encode()
    (resp,) = _same_on_wire(port, proxy.port, post(body, extra=f"x-canned-status: {status}\r\n"))
    assert resp.status == status
    assert proxy.samples() == []
    assert proxy.dropped("upstream_error") == 1  # the direct call never reached the proxy


def test_upstream_down_gives_a_clear_502(make_proxy):
    dead = _free_port()
    proxy = make_proxy(f"http://127.0.0.1:{dead}")
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(**chat_body("down?", "http://example.invalid/x.png"))
    assert e.value.status_code == 502
    assert "unreachable" in e.value.message and f"127.0.0.1:{dead}" in e.value.message
    assert e.value.response.headers["x-vlmwatch-proxy"] == "error"
    assert proxy.metrics.upstream_errors.labels("connect")._value.get() == 1


def test_upstream_silent_past_read_timeout_gives_502(canned, make_proxy):
    _, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}", read_timeout=0.3)
    body = json.dumps(chat_body("slow?", "http://example.invalid/x.png")).encode()
    t0 = time.monotonic()
    (resp,), _ = raw_http(proxy.port, post(body, extra="x-canned-delay: 5\r\n"))
    assert resp.status == 502 and b"did not answer within 0.3 s" in resp.body
    assert time.monotonic() - t0 < 3


def test_client_timeout_closes_the_upstream_request(canned, make_proxy):
    srv, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        client.with_options(default_headers={"x-canned-delay": "2"}).chat.completions.create(
            **chat_body("slow?", "http://example.invalid/x.png"))
    time.sleep(0.3)
    assert all(not c.inflight for c in proxy.server.connections)  # nothing left dangling
    # the proxy keeps serving
    assert client.chat.completions.create(**chat_body("ok?", "http://example.invalid/x.png")).id


def test_upstream_closing_without_answer_gives_502(canned, make_proxy):
    _, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    body = json.dumps(chat_body("close?", "http://example.invalid/x.png")).encode()
    (resp,), _ = raw_http(proxy.port, post(body, extra="x-canned-close: 1\r\n"))
    assert resp.status == 502 and b"closed the connection before answering" in resp.body


def _bad_bodies(png: bytes) -> dict[str, tuple[bytes, str]]:
    small = png_bytes(6, side=16)
    good = chat_body("q", data_url(small))
    unsupported = chat_body("q", data_url(small))
    unsupported["messages"][0]["content"].append({"type": "input_audio", "input_audio": {"data": "AAAA"}})
    corrupt = json.loads(json.dumps(good))
    corrupt["messages"][0]["content"][1]["image_url"]["url"] = "data:image/png;base64," + "%%%" + "A" * 400
    not_image = json.loads(json.dumps(good))
    not_image["messages"][0]["content"][1]["image_url"]["url"] = "data:image/png;base64," + base64.b64encode(
        b"this is plain text, not a picture " * 20).decode()
    no_image = {"model": "m", "messages": [{"role": "user", "content": "just text"}]}
    return {
        "malformed_json": (b'{"model": "m", "messages": [', "bad_json"),
        "unsupported_content": (json.dumps(unsupported).encode(), "unsupported_content"),
        "corrupt_base64": (json.dumps(corrupt).encode(), "bad_image"),
        "not_an_image": (json.dumps(not_image).encode(), "bad_image"),
        "no_image": (json.dumps(no_image).encode(), "no_image"),
        "oversized": (json.dumps(chat_body("big", data_url(png))).encode(), "too_large"),
    }


@pytest.mark.parametrize("case", ["malformed_json", "unsupported_content", "corrupt_base64", "not_an_image",
                                  "no_image", "oversized"])
def test_bad_input_reaches_upstream_unchanged_and_sample_is_dropped(canned, make_proxy, png, case):
    srv, port = canned
    body, reason = _bad_bodies(png)[case]
    proxy = make_proxy(f"http://127.0.0.1:{port}", max_body_bytes=50_000)
    data = post(body)
    (resp,) = _same_on_wire(port, proxy.port, data)
    assert resp.status == 200
    assert srv.requests[-1] == srv.requests[-2] == body
    assert proxy.samples() == []
    assert proxy.dropped(reason) == 1


def test_metrics_endpoint_counts_requests_and_drops(canned, make_proxy):
    _, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    raw_http(proxy.port, post(b"not json"))
    assert proxy.dropped("bad_json") == 1  # the worker counts it after the response: wait for it
    (resp,), _ = raw_http(proxy.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
    assert resp.status == 200 and resp.header(b"content-type").startswith(b"text/plain")
    text = resp.body.decode()
    assert 'vlmwatch_collector_requests_total{route="/v1/chat/completions",source="proxy"} 1.0' in text
    assert 'vlmwatch_collector_samples_dropped_total{reason="bad_json",source="proxy"} 1.0' in text
    assert 'reason="queue_full"' in text


def test_full_queue_drops_samples_never_delays_requests(canned, make_proxy):
    _, port = canned

    def slow_redact(sample):
        time.sleep(0.5)
        return sample

    proxy = make_proxy(f"http://127.0.0.1:{port}", queue_size=2, redact=slow_redact)
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0)
    img = data_url(png_bytes(4, side=16))
    t0 = time.monotonic()
    for i in range(12):
        client.chat.completions.create(**chat_body(f"fast {i}", img))
    assert time.monotonic() - t0 < 3.0  # 12 x 0.5 s of worker time did not reach the requests
    assert proxy.dropped("queue_full") >= 1
    assert len(proxy.samples()) + proxy.dropped("queue_full") == 12


def test_redaction_failure_drops_sample_never_stores_raw(canned, make_proxy, png):
    _, port = canned

    def redact(sample):
        if "secret" in sample.prompt:
            raise RuntimeError("cannot redact")
        sample.prompt = sample.prompt.replace("Alice", "[name]")
        return sample

    proxy = make_proxy(f"http://127.0.0.1:{port}", redact=redact)
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k")
    client.chat.completions.create(**chat_body("a secret question", data_url(png)))
    client.chat.completions.create(**chat_body("Is Alice in the picture?", data_url(png)))
    samples = proxy.samples()
    assert [s.prompt for s in samples] == ["Is [name] in the picture?"]
    assert proxy.dropped("redaction_failed") == 1
    raw = b"".join(p.read_bytes() for p in proxy.spool_root.rglob("seg-*.log"))
    assert b"secret" not in raw and b"Alice" not in raw
