"""The spot checks' greedy hook: greedily served answers against the monitor's own greedy answer."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import select

from monitor.config import Settings
from alerts.rules import SERVED_MODEL_MISMATCH
from monitor.probe.served_check import CHECKS
from monitor.spotcheck.job import run_spotcheck
from storage.db import make_engine, session_factory
from storage.models import Alert, Image, ProbeVersion, Sample, Score

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
MODEL = "tiny-llava"
N = 8


@pytest.fixture(scope="module")
def adapter():
    from monitor.adapter import load_vlm
    from monitor.fixtures.registry import fixture_dir

    return load_vlm(fixture_dir(MODEL), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def served(adapter):
    """SynPOPE questions and the answers the fixture server's greedy generation gives them."""
    from monitor.synpope.generate import iter_examples

    out = []
    for ex in iter_examples("adversarial", N, seed=3):
        gens, _ = adapter.generate_detailed(ex.image, ex.prompt, max_new_tokens=4, temperature=0.0)
        buf = io.BytesIO()
        ex.image.save(buf, format="PNG")
        out.append((buf.getvalue(), ex.prompt, gens[0].text))
    return out


@pytest.fixture(autouse=True)
def _fresh_checks():
    CHECKS.clear()
    yield
    CHECKS.clear()


def _sessions(tmp_path, served, answer_of, meta):
    from tests.daemon.helpers import sqlite_db

    sessions = session_factory(make_engine(sqlite_db(tmp_path)))
    with sessions.begin() as s:
        pv = ProbeVersion(model=MODEL, version="v1", path="/nowhere", model_fingerprint="f" * 64, layer=2,
                          pooling="answer", threshold=0.5, active=True)  # fmt: skip
        s.add(pv)
        s.flush()
        for i, (png, prompt, answer) in enumerate(served):
            sha = f"{i:064x}"
            s.add(Image(sha256=sha, size=len(png), format="PNG", width=64, height=64, data=png))
            s.add(Sample(id=f"s{i}", model=MODEL, ts=NOW - timedelta(minutes=30 - i), prompt=prompt,
                         answer=answer_of(answer), image_sha256=sha, status="scored", meta=meta))  # fmt: skip
            s.flush()
            s.add(Score(sample_id=f"s{i}", probe_version_id=pv.id, p_correct=0.5, created_at=NOW - timedelta(minutes=5)))
    return sessions


def _settings():
    from monitor.fixtures.registry import fixture_dir

    return Settings(models={MODEL: {"path": str(fixture_dir(MODEL))}}, spotcheck={"k": 2, "max_new_tokens": 4, "rate": 1.0})


def _run(sessions, adapter):
    run = run_spotcheck(sessions, _settings(), adapters={MODEL: adapter}, now=NOW, rng=np.random.default_rng(0))
    assert run.processed == N
    with sessions() as s:
        return list(s.scalars(select(Alert).where(Alert.rule == SERVED_MODEL_MISMATCH.name)))


def _flip(answer: str) -> str:
    return {"yes": "no", "no": "yes"}.get(answer.strip().lower(), "yes")


def test_the_served_greedy_answers_agree_with_the_monitor(tmp_path, adapter, served):
    assert len({a for _, _, a in served}) > 1  # the answers differ: agreeing on all of them means something
    sessions = _sessions(tmp_path, served, lambda a: a, {"temperature": 0, "max_tokens": 4})
    assert _run(sessions, adapter) == []
    check = CHECKS.get(MODEL, _check_params())
    assert (check.greedy.checks, check.greedy.exceeded) == (N, 0)


def test_greedy_answers_another_model_gave_raise_the_mismatch(tmp_path, adapter, served):
    sessions = _sessions(tmp_path, served, _flip, {"temperature": 0, "max_tokens": 4})
    alerts = _run(sessions, adapter)
    assert [(a.state, a.severity) for a in alerts] == [("firing", "critical")]
    assert alerts[0].metrics["greedy_disagreed"] >= 4 and alerts[0].metrics["logprob_checks"] == 0


def test_sampled_answers_are_not_compared(tmp_path, adapter, served):
    sessions = _sessions(tmp_path, served, _flip, {"temperature": 1.0, "max_tokens": 4})
    assert _run(sessions, adapter) == []
    assert CHECKS.get(MODEL, _check_params()).greedy.checks == 0


def _check_params():
    from monitor.probe.served_check import MismatchParams

    return MismatchParams.from_config(_settings().served_check)
