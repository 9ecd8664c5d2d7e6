"""Write protection: no open writes on a public address unless configured, open writes said out
loud, request bodies bounded (413) before they are read, for every write route, chunked too."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from monitor.api.server import make_server
from monitor.config import ConfigError, Settings
from storage.db import session_factory
from storage.models import Label, Sample
from tests.api.helpers import running
from tests.daemon.helpers import free_port

TOKEN_ENV = "VLMWATCH_TEST_GUARD_TOKEN"
LIMIT = 4096


def _settings(engine, listen: str, **api: Any) -> Settings:
    return Settings(storage={"url": str(engine.url)},
                    api={"listen": listen, "token_env": TOKEN_ENV, "max_body_bytes": LIMIT, **api})


def _sample(i: int, **kw: Any) -> dict[str, Any]:
    return {"id": f"g{i}", "model": "m", "prompt": "Is there a dog?", "answer": "yes", **kw}


def _stored(engine) -> tuple[int, int]:
    with session_factory(engine)() as s:
        return s.scalar(select(func.count()).select_from(Sample)), s.scalar(select(func.count()).select_from(Label))


def test_open_writes_on_a_public_address_refuse_to_start(engine, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ConfigError) as err:
        make_server(_settings(engine, f"0.0.0.0:{free_port()}"), engine=engine)
    msg = str(err.value)
    assert "api.listen" in msg and TOKEN_ENV in msg and "api.allow_open_writes" in msg
    # explicitly allowed: starts, and says so
    server = make_server(_settings(engine, f"0.0.0.0:{free_port()}", allow_open_writes=True), engine=engine)
    assert server.config.host == "0.0.0.0"
    # a token closes writes: then any address is fine
    monkeypatch.setenv(TOKEN_ENV, "t0ken")
    make_server(_settings(engine, f"0.0.0.0:{free_port()}"), engine=engine)


def test_the_daemon_refuses_before_taking_its_locks(db_url, engine, monkeypatch, tmp_path) -> None:
    from monitor.commands.daemon import api_beside
    from monitor.daemon import Daemon

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    settings = Settings(storage={"url": db_url}, api={"listen": f"0.0.0.0:{free_port()}", "token_env": TOKEN_ENV},
                        daemon={"report_dir": str(tmp_path / "r")}, spool={"dir": str(tmp_path / "spool")})
    d = Daemon(settings, engine=engine)
    with pytest.raises(ConfigError, match="allow_open_writes"):
        d.start(beside=api_beside(settings, d))
    assert d.leader._conn is None and (d.file_lock is None or d.file_lock._fd is None)  # no lock taken
    assert d.scheduler is None or not d.scheduler.running


def test_healthz_and_startup_log_say_when_writes_are_open(engine, monkeypatch, caplog) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    port = free_port()
    with caplog.at_level(logging.INFO, logger="monitor.api"):
        server = make_server(_settings(engine, f"127.0.0.1:{port}"), engine=engine)
    assert any(r.levelno == logging.WARNING and "writes are OPEN" in r.getMessage() and TOKEN_ENV in r.getMessage()
               for r in caplog.records), caplog.text
    with running(server):
        h = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        assert h["writes"] == "open"
    monkeypatch.setenv(TOKEN_ENV, "t0ken")
    port = free_port()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monitor.api"):
        server = make_server(_settings(engine, f"127.0.0.1:{port}"), engine=engine)
    assert not any("OPEN" in r.getMessage() for r in caplog.records)
    with running(server):
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["writes"] == "token"


def _raw(port: int, head: bytes, body_parts: list[bytes], pause: float = 0.0) -> tuple[int, bytes]:
    """Send a request over a raw socket, body in parts; read whatever the server answers (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(pause)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def test_bodies_over_the_limit_get_413_before_they_are_read(engine, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    port = free_port()
    server = make_server(_settings(engine, f"127.0.0.1:{port}"), engine=engine)
    with running(server):
        host = f"Host: 127.0.0.1:{port}\r\n".encode()
        # a Content-Length of 10 GB, and not one byte of body sent: the answer comes from the header alone
        t0 = time.monotonic()
        status, body = _raw(port, b"POST /v1/samples HTTP/1.1\r\n" + host +
                            b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n", [])
        assert status == 413 and time.monotonic() - t0 < 5
        assert "api.max_body_bytes" in json.loads(body)["error"]
        # chunked, no length: refused once the received bytes pass the limit, while the client
        # still holds the rest of the body (it never sends the final chunk)
        chunk = b"x" * 1024
        parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // len(chunk) + 2)]
        status, body = _raw(port, b"POST /v1/labels HTTP/1.1\r\n" + host +
                            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", parts, pause=0.01)
        assert status == 413 and "api.max_body_bytes" in json.loads(body)["error"]
        # a chunked body within the limit is read and stored as usual
        payload = json.dumps({"samples": [_sample(1)]}).encode()
        status, body = _raw(port, b"POST /v1/samples HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                            [b"%x\r\n%s\r\n" % (len(payload), payload), b"0\r\n\r\n"])
        assert status == 200 and json.loads(body)["accepted"] == 1, body
    assert _stored(engine) == (1, 0)  # nothing from the refused requests


def test_every_write_route_is_guarded_even_one_added_later(engine, monkeypatch) -> None:
    from monitor.api import create_app

    monkeypatch.setenv(TOKEN_ENV, "t0ken")
    app = create_app(_settings(engine, "127.0.0.1:1"), engine=engine)
    hits: list[int] = []

    @app.post("/v1/added-later")
    async def added(body: dict) -> dict:  # a write route another module adds, with no guard of its own
        hits.append(1)
        return {"ok": True}

    import asyncio

    async def go() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            codes = [(await c.post(path, json={"x": 1})).status_code
                     for path in ("/v1/samples", "/v1/labels", "/v1/added-later")]
            auth = {"Authorization": "Bearer t0ken"}
            codes.append((await c.post("/v1/added-later", json={"x": 1}, headers=auth)).status_code)
            codes.append((await c.post("/v1/added-later", content=b'{"x": "' + b"y" * LIMIT + b'"}', headers={
                **auth, "Content-Type": "application/json"})).status_code)
            codes.append((await c.get("/v1/alerts")).status_code)  # reads stay open
            return codes

    assert asyncio.run(go()) == [401, 401, 401, 200, 413, 200]
    assert hits == [1]
