"""Real HTTP receivers on loopback and alert-config helpers for the alert tests."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: answers with ``script`` statuses in turn (then ``default``)."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: int = 200
    requests: list[Received] = field(default_factory=list)
    url: str = ""

    @property
    def ok(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]


@pytest.fixture
def receiver():
    rec = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                status, headers = rec.script.pop(0) if rec.script else (rec.default, {})
                rec.requests.append(Received(self.path, dict(self.headers.items()), body, time.monotonic(), status))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield rec
    server.shutdown()
    server.server_close()


def alerts_config(channels: list[dict[str, Any]], **kw: Any):
    from monitor.config import AlertsConfig

    base = {"channels": channels, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2}
    base.update(kw)
    return AlertsConfig(**base)


def signal(status: str, detector: str = "cusum_disagreement", model: str = "m1", probe: str = "v1", **kw: Any):
    from alerts.lifecycle import Signal

    return Signal(
        detector=detector, model=model, probe_version=probe, status=status,  # type: ignore[arg-type]
        metrics=kw.pop("metrics", {"disagreement": 0.2, "disagreement_ci": [0.15, 0.25], "reference_disagreement": 0.1}),
        detector_state=kw.pop("detector_state", {"s": 12.0, "h": 9.0}),
        window=kw.pop("window", {"source": "human", "from_label_id": 1, "to_label_id": 900}),
        evidence=kw.pop("evidence", {"reference": {"id": 1, "disagreement": 0.1}, "sample_ids": ["s1", "s2"]}),
        summary=kw.pop("summary", "disagreement 0.20 vs reference 0.10"),
    )


@pytest.fixture
def make_config():
    return alerts_config


@pytest.fixture
def make_signal():
    return signal
