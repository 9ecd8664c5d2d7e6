"""A real uvicorn server for the API on loopback (imported as ``tests.api.helpers``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx

from monitor.api.server import make_server
from monitor.config import Settings
from tests.daemon.helpers import free_port


def serve_api(engine, token_env: str = "VLMWATCH_TEST_API_TOKEN", **settings) -> Iterator[httpx.Client]:
    """Yield a client of the API over ``engine`` (a thread of this process), then stop it."""
    port = free_port()
    cfg = Settings(storage={"url": str(engine.url)}, api={"listen": f"127.0.0.1:{port}", "token_env": token_env},
                   **settings)
    server = make_server(cfg, engine=engine)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "API did not start"
        time.sleep(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        yield c
    server.should_exit = True
    t.join(10)
