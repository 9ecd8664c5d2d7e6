"""A tiny monitored world in a real database: one active probe, samples, scores and evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pytest

from storage.db import session_factory
from storage.models import Label, ProbeVersion, Sample, Score, SpotCheck, utcnow


@dataclass
class World:
    factory: object
    pv_id: int
    t0: datetime
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))
    n: int = 0

    def add(self, scores, correct, *, seconds_apart: float = 1.0, label: bool = True, score: bool = True,
            source: str = "ground_truth", spot_agreement=None, start: datetime | None = None,
            task: str | None = None) -> list[str]:
        """Add samples (with scores and labels unless told otherwise); returns their ids."""
        from sqlalchemy import insert

        base = start or self.t0 + timedelta(seconds=self.n * seconds_apart)
        ids = [f"s{self.n + i:06d}" for i in range(len(scores))]
        self.n += len(ids)
        with self.factory() as s:
            s.execute(insert(Sample), [dict(id=sid, model="m1", ts=base + timedelta(seconds=i * seconds_apart),
                                            prompt="q", answer="yes", task=task) for i, sid in enumerate(ids)])
            if score:
                s.execute(insert(Score), [dict(sample_id=sid, probe_version_id=self.pv_id, p_correct=float(p))
                                          for sid, p in zip(ids, scores)])
            if label:
                s.execute(insert(Label), [dict(sample_id=sid, correct=bool(y), source=source)
                                          for sid, y in zip(ids, correct)])
            if spot_agreement is not None:
                s.execute(insert(SpotCheck), [dict(sample_id=sid, k=10, one_token=True, agreement=float(a), entropy=0.1,
                                                   inclusion_prob=1.0, reason="uniform", compute_seconds=0.01)
                                              for sid, a in zip(ids, spot_agreement)])
            s.commit()
        return ids


@pytest.fixture
def world(engine):
    return new_world(engine)


def new_world(engine) -> World:
    """An empty world over ``engine``: one active probe version ``v1`` of model ``m1``."""
    factory = session_factory(engine)
    t0 = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(days=2)  # hour-aligned
    with factory() as s:
        pv = ProbeVersion(model="m1", version="v1", path="/x", model_fingerprint="f" * 64, layer=3, pooling="last",
                          threshold=0.5, active=True, created_at=t0 - timedelta(hours=1), activated_at=t0 - timedelta(hours=1))
        s.add(pv)
        s.commit()
        pv_id = pv.id
    return World(factory, pv_id, t0)


@pytest.fixture
def fast_settings():
    """Settings with small references and fewer simulations, so tests stay quick on 2 cores."""
    return make_fast_settings


def make_fast_settings(channels=(), **alerts):
    """The settings of :func:`fast_settings`, for module-scoped fixtures."""
    from monitor.config import Settings

    return Settings(
        calibration={"reference_n": 600, "min_labels": 100, "bootstrap": 100, "rolling_n": 300},
        detect={"simulations": 300, "adwin_simulations": 10, "horizon": 5000},
        alerts={"channels": list(channels), "backoff_initial_seconds": 0.05, "no_data_minutes": 0, **alerts},
    )


@pytest.fixture
def make_hook():
    """A loopback webhook receiver: (url, list of received (headers, body) pairs)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got: list[tuple[dict, bytes]] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/", got
    srv.shutdown()
    srv.server_close()
