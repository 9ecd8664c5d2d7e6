"""The proxy under hostile clients on loopback (shared by the tests and ``bench/robustness.py``;
imported as ``tests.robustness.hostile_proxy``).

While well-behaved clients call through the proxy (and, alongside, straight to the upstream, for
the p99 to compare with), hostile clients send: headers one byte at a time (slowloris), a body
over ``max_body_bytes``, a request cut off mid-body, a streamed answer they hang up on, pipelined
requests, and a request with both ``Transfer-Encoding`` and ``Content-Length``. Each hostile
request is also sent straight to the upstream: the upstream must see the same request bodies
and the client the same bytes back, through the proxy or not.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from collectors.canned_upstream import start_canned
from tests.collectors.helpers import RunningProxy, chat_body, data_url, png_bytes, post, raw_http

__all__ = ["proxy_hostile_clients"]

MAX_BODY = 60_000


def _p99(lat: list[float]) -> float:
    lat = sorted(lat)
    return round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 3) if lat else float("nan")


def _well_behaved(port: int, stop: threading.Event, out: dict[str, Any], body: bytes) -> None:
    """Paced requests (one per 5 ms) on a keep-alive connection; latencies and any wrong answer."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                r = c.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
                ok = r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
            except (httpx.HTTPError, ValueError, KeyError):
                ok = False
            out["latencies"].append(time.perf_counter() - t0)
            out["failed"] += 0 if ok else 1
            time.sleep(max(0.0, 0.005 - (time.perf_counter() - t0)))


def _hang_up(port: int, data: bytes, read: int) -> None:
    """Send ``data``, read ``read`` bytes of the answer (0: none), close with a RST."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        if read:
            s.recv(read)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def _cases(img: str) -> dict[str, tuple[list[bytes], int, float]]:
    """name -> (writes on one connection, responses expected, pause between writes)."""
    small = json.dumps(chat_body("hostile?", img)).encode()
    big = json.dumps(chat_body("big " + "x" * MAX_BODY, img)).encode()
    slow = post(small, extra="Connection: close\r\n")
    head_end = slow.index(b"\r\n\r\n") + 4
    return {
        "slowloris_headers": ([slow[i:i + 3] for i in range(0, head_end, 3)] + [slow[head_end:]], 1, 0.01),
        "body_over_limit": ([post(big, extra="Connection: close\r\n")], 1, 0.0),
        "pipelined": ([post(small) + post(small.replace(b"hostile", b"second")) +
                       post(small.replace(b"hostile", b"third"), extra="Connection: close\r\n")], 3, 0.0),
        "te_and_cl": ([b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small)], 1, 0.0),
    }


def proxy_hostile_clients(tmp: Path, hang_ups: int = 20) -> dict[str, Any]:
    srv, upstream, stop_upstream = start_canned()
    proxy = RunningProxy(f"http://127.0.0.1:{upstream}", tmp / "spool-hostile", max_body_bytes=MAX_BODY)
    img = data_url(png_bytes(3, side=16))
    good = json.dumps(chat_body("well-behaved?", img)).encode()
    stop = threading.Event()
    via = {"latencies": [], "failed": 0}
    direct = {"latencies": [], "failed": 0}
    load = [threading.Thread(target=_well_behaved, args=(proxy.port, stop, via, good)),
            threading.Thread(target=_well_behaved, args=(upstream, stop, direct, good))]
    for t in load:
        t.start()
    cases: dict[str, Any] = {}
    try:
        time.sleep(0.3)
        for name, (writes, n, pause) in _cases(img).items():
            seen = []
            for port in (upstream, proxy.port):
                before = len(srv.requests)
                responses, raw = raw_http(port, writes, n, timeout=5, pause=pause)
                theirs = [b for b in srv.requests[before:] if b != good]  # not the well-behaved clients' bodies
                seen.append((raw, theirs, [r.status for r in responses]))
            (d_raw, d_bodies, d_status), (p_raw, p_bodies, p_status) = seen
            cases[name] = {"statuses": p_status, "same_bytes_to_client": p_raw == d_raw,
                           "same_requests_upstream": p_bodies == d_bodies and bool(d_status)}
        stream = post(json.dumps(chat_body("hang up?", img, stream=True)).encode())
        cut = post(good)[: len(post(good)) // 2]
        for i in range(hang_ups):  # mid-stream and mid-body disconnects
            _hang_up(proxy.port, stream, 64)
            _hang_up(proxy.port, cut, 0)
        cases["disconnect_mid_stream_and_mid_body"] = {"connections": 2 * hang_ups}
        time.sleep(0.3)
    finally:
        stop.set()
        for t in load:
            t.join(15)
    try:
        alive = httpx.post(f"{proxy.url}/v1/chat/completions", content=good,
                           headers={"Content-Type": "application/json"}, timeout=10).status_code == 200
        too_large = proxy.dropped("too_large")
    finally:
        proxy.stop()
        stop_upstream()
    return {
        "cases": cases,
        "proxy_up_after": alive,
        "oversized_samples_dropped_as_too_large": too_large,
        "well_behaved_requests": len(via["latencies"]),
        "well_behaved_failed": via["failed"],
        "well_behaved_p99_ms": _p99(via["latencies"]),
        "direct_p99_ms_same_time": _p99(direct["latencies"]),
        "well_behaved_p99_added_ms": round(_p99(via["latencies"]) - _p99(direct["latencies"]), 3),
        "direct_failed": direct["failed"],
    }
