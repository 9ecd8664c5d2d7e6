"""A silent model swap end to end: fixture server -> proxy -> spool -> daemon (ship, score) -> alert.

Production is swapped mid-traffic for other weights under the same served name and the same
``system_fingerprint``; the monitor's own copy (and so its probe) is untouched, so ``probe_stale``
cannot see it. Only the served tokens' log-probabilities against the scorer's recompute can.
"""

from __future__ import annotations

import base64
import io
import time

import pytest
from sqlalchemy import func, select

from alerts.rules import SERVED_MODEL_MISMATCH
from monitor.probe.served_check import CHECKS

PRE_SWAP = 60
MAX_POST_SWAP = 200
CHUNK = 20


def _ask(client, ex) -> None:
    buf = io.BytesIO()
    ex.image.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    client.chat.completions.create(
        model="tiny-llava", max_tokens=4, temperature=0, logprobs=True,
        messages=[{"role": "user", "content": [{"type": "text", "text": ex.prompt},
                                               {"type": "image_url", "image_url": {"url": url}}]}],
    )  # fmt: skip


def _wait_scored(sessions, n: int, timeout: float = 120.0) -> None:
    from storage.models import Sample

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as s:
            if s.scalar(select(func.count()).select_from(Sample).where(Sample.status == "scored")) >= n:
                return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} samples scored after {timeout} s")


def _mismatch_alerts(sessions) -> list:
    from storage.models import Alert

    with sessions() as s:
        return list(s.scalars(select(Alert).where(Alert.rule == SERVED_MODEL_MISMATCH.name)))


def test_a_mid_traffic_swap_under_the_same_name_and_fingerprint_fires_within_200_samples(
    tmp_path, llava_dir, llava
):
    import openai

    from monitor.daemon import Daemon
    from monitor.daemon.runner import JobResult
    from monitor.fixtures.server import serve_in_thread
    from monitor.fixtures.variants import perturbed_copy
    from monitor.synpope.generate import iter_examples
    from storage.db import make_engine, session_factory
    from storage.models import Alert, Sample
    from tests.collectors.helpers import RunningProxy
    from tests.daemon.helpers import sqlite_db
    from tests.probe.conftest import deploy_with_probe

    url = sqlite_db(tmp_path)
    engine = make_engine(url)
    sessions = session_factory(engine)
    spool = tmp_path / "spool"
    deploy, _, settings = deploy_with_probe(
        tmp_path, llava_dir, llava, sessions,
        storage={"url": url}, spool={"dir": str(spool), "collector_ships": False, "ship_interval_seconds": 0.3},
        daemon={"score_interval_seconds": 0.3, "start_api": False},
        served_check={"recompute_share": 1.0},
    )  # fmt: skip
    noop = lambda ctx: JobResult()  # noqa: E731
    traffic = iter_examples("adversarial", PRE_SWAP + MAX_POST_SWAP, seed=41)
    with serve_in_thread(deploy, model_name="tiny-llava") as server:
        proxy = RunningProxy(server.base_url.rsplit("/v1", 1)[0], spool)
        daemon = Daemon(settings, engine=engine,
                        jobs={n: noop for n in ("spotcheck", "calibrate", "detect", "report", "retention")})
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
        daemon.start()
        try:
            for _ in range(PRE_SWAP):
                _ask(client, next(traffic))
            _wait_scored(sessions, PRE_SWAP)
            assert _mismatch_alerts(sessions) == []  # the same weights: no alarm

            server.swap(perturbed_copy(llava_dir, 0.3))
            sent = 0
            while sent < MAX_POST_SWAP and not _mismatch_alerts(sessions):
                for _ in range(CHUNK):
                    _ask(client, next(traffic))
                sent += CHUNK
                _wait_scored(sessions, PRE_SWAP + sent)
        finally:
            daemon.stop()
            proxy.stop()
    alerts = _mismatch_alerts(sessions)
    assert len(alerts) == 1, f"no {SERVED_MODEL_MISMATCH.name} after {sent} swapped samples"
    a: Alert = alerts[0]
    assert (a.state, a.severity, a.model) == ("firing", "critical", "tiny-llava")
    assert sent <= MAX_POST_SWAP and a.metrics["logprob_exceeded"] >= 3
    assert a.metrics["system_fingerprint_changed"] is False  # the cheap hint saw nothing
    with sessions() as s:
        fps = {m.get("system_fingerprint") for m in s.scalars(select(Sample.meta))}
    assert len(fps) == 1 and None not in fps


@pytest.fixture(autouse=True)
def _fresh_checks():
    CHECKS.clear()
    yield
    CHECKS.clear()
