"""A real uvicorn server for the API on loopback (imported as ``tests.api.helpers``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import numpy as np

from monitor.api.server import ServerThread, make_server
from monitor.config import Settings
from tests.daemon.helpers import free_port


API_TOKEN_ENV = "VLMWATCH_TEST_API_TOKEN"  # default api.token_env of serve_api's server


@contextmanager
def running(server: Any) -> Iterator[None]:
    """Serve ``server`` (a uvicorn.Server from make_server) in a thread, as the daemon does, until the block ends."""
    thread = ServerThread(server)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "API did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        thread.stop(timeout=10)


def serve_api(engine, token_env: str = API_TOKEN_ENV, *, timeout: float = 10,
              sections: dict[str, Any] | None = None, **api: Any) -> Iterator[httpx.Client]:
    """Yield a client of the API over ``engine`` (a real uvicorn in a thread of this process), then stop it.

    ``api``: more api.* keys; ``sections``: more config sections (``{"recalibration": {...}}``).
    """
    port = free_port()
    cfg = Settings(storage={"url": str(engine.url)}, api={"listen": f"127.0.0.1:{port}", "token_env": token_env, **api},
                   **(sections or {}))
    with running(make_server(cfg, engine=engine)), httpx.Client(base_url=f"http://127.0.0.1:{port}",
                                                                  timeout=timeout) as c:
        yield c


def detector_stream(n: int, rate: float | None = None, seed: int = 0):
    """(scores, correct) of a synthetic AUROC-0.9 probe; ``rate``: its disagreement with the evidence."""
    from monitor.detect.synthetic import BinormalProbe

    probe = BinormalProbe()
    st = probe.sample(1, n, np.random.default_rng(seed), d=None if rate is None else probe.d_for_disagreement(rate))
    return st.scores[0], st.correct[0]


def drift(world: Any, settings: Any) -> tuple[datetime, Any]:
    """A reference of 600 labels, then a drift to 25% disagreement, each step through the real
    calibrate and detect jobs: the disagreement CUSUM fires an alert. Returns (now, last DetectResult)."""
    from monitor.calibration.history import run_calibrate
    from monitor.detect import run_detect
    from storage.models import utcnow

    world.add(*detector_stream(600, seed=1))
    now = utcnow()
    run_calibrate(world.factory, settings, now)
    run_detect(world.factory, settings, now)
    for i in range(4):
        world.add(*detector_stream(400, rate=0.25, seed=20 + i))
        run_calibrate(world.factory, settings, now + timedelta(minutes=i + 1))
        res = run_detect(world.factory, settings, now + timedelta(minutes=i + 1))
    return now, res
