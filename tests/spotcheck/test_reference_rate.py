"""The reference period of a fresh probe version is spot-checked at ``spotcheck.reference_rate``, so
its spot-check detectors arm; afterwards ``spotcheck.rate`` applies (#16 part 2b).

A daemon-like loop over a real database: 40 samples scored every 5 minutes (480 an hour), a
spot-check run after each batch and the default reference grown after it, as the calibrate job
does. The check itself is faked (2 s of compute each, the default prior), so the hourly budget
(600 s) is met the way the default settings meet it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import insert, select

from monitor.calibration.reference import ensure_default_reference
from monitor.config import Settings
from monitor.detect.readiness import needs
from monitor.spotcheck import job
from monitor.spotcheck.check import SpotCheckResult
from monitor.spotcheck.job import run_spotcheck
from storage.db import session_factory
from storage.models import ProbeVersion, Sample, Score, SpotCheck

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
MODEL = "m1"
SPOT_DETECTORS = ("cusum_disagreement:self_consistency", "cusum_residual:self_consistency", "adwin_spotcheck")


def _fake_check(ad, image, cand, settings):
    agreement = 0.9 if int(cand.id[1:]) % 5 else 0.2
    stats = SimpleNamespace(agreement=agreement, entropy=0.3, majority_group="yes", groups={"yes": agreement})
    return SpotCheckResult(one_token=True, k=10, stats=stats, answers=[], compute_seconds=2.0)


@pytest.fixture
def fake_checks(monkeypatch):
    monkeypatch.setattr(job, "_check", _fake_check)
    monkeypatch.setattr(job, "check_greedy_answer", lambda *a, **k: None)


def test_the_reference_period_gets_the_spot_checks_its_detectors_need(engine, fake_checks):
    settings = Settings(calibration={"reference_n": 400, "min_labels": 100, "bootstrap": 20})
    cfg = settings.spotcheck
    assert (cfg.rate, cfg.reference_rate, cfg.gpu_seconds_per_hour) == (0.05, 0.35, 600.0)  # the defaults
    sessions = session_factory(engine)
    with sessions.begin() as s:
        pv = ProbeVersion(model=MODEL, version="v1", path="/x", model_fingerprint="f" * 64, layer=2, pooling="last",
                          threshold=0.5, active=True, created_at=T0 - timedelta(hours=1), activated_at=T0)
        s.add(pv)
        s.flush()
        pv_id = pv.id
    rng = np.random.default_rng(3)
    expected: dict[str, float] = {}  # sample id -> the probability it must have been drawn with
    in_period = set()
    armed_at = None
    for tick in range(20):  # 800 samples; the reference period is the first 400
        now = T0 + timedelta(minutes=5 * tick + 4)
        ids = [f"s{40 * tick + i:04d}" for i in range(40)]
        with sessions.begin() as s:
            s.execute(insert(Sample), [dict(id=sid, model=MODEL, ts=T0 + timedelta(minutes=5 * tick, seconds=5 * i),
                                            prompt="q", answer="yes", status="scored") for i, sid in enumerate(ids)])
            # scores far from the threshold: no boundary boost, every probability is rate x budget scale
            s.execute(insert(Score), [dict(sample_id=sid, probe_version_id=pv_id, p_correct=float(p), created_at=now)
                                      for sid, p in zip(ids, rng.uniform(0.9, 1.0, len(ids)))])
        run = run_spotcheck(sessions, settings, adapters={MODEL: object()}, now=now, rng=rng)
        assert run.candidates == 40 and run.undecided == 0 and not run.budget_exhausted
        assert run.budget_scale == 1.0  # 480 an hour x 0.35 x 2 s = 336 s: inside the 600 s budget
        rate = cfg.reference_rate if tick < 10 else cfg.rate
        assert run.reference_period == (40 if tick < 10 else 0)
        for sid, _, pi in run.decisions:
            expected[sid] = rate * run.budget_scale
            assert pi == pytest.approx(rate * run.budget_scale)
        if tick < 10:
            in_period.update(ids)
        with sessions.begin() as s:
            ref = ensure_default_reference(s, settings, s.get(ProbeVersion, pv_id))
            if armed_at is None and all(needs(ref, d, settings.calibration) is None for d in SPOT_DETECTORS):
                armed_at = tick
    with sessions() as s:
        checks = {c.sample_id: c.inclusion_prob for c in s.scalars(select(SpotCheck))}
        ref = ensure_default_reference(s, settings, s.get(ProbeVersion, pv_id))
    assert len(expected) == 800
    for sid, pi in checks.items():  # the probability stored is the one drawn with
        assert pi == pytest.approx(expected[sid])
    in_ref = [sid for sid in checks if sid in in_period]
    assert len(in_ref) >= 100  # at 0.05 it would be about 20
    after = len(checks) - len(in_ref)
    assert after < 0.12 * 400  # about 20 of the 400 after the period: the normal rate
    sc = ref.stats["self_consistency"]
    assert sc["complete"] and sc["n"] == len(in_ref)  # the reference holds the period's checks, no later ones
    assert armed_at == 9  # armed as soon as the period was decided
    assert all(needs(ref, d, settings.calibration) is None for d in SPOT_DETECTORS)


def test_the_budget_scale_shrinks_the_reference_rate_too(engine, fake_checks):
    settings = Settings(calibration={"reference_n": 400}, spotcheck={"gpu_seconds_per_hour": 14.0})
    sessions = session_factory(engine)
    with sessions.begin() as s:
        pv = ProbeVersion(model=MODEL, version="v1", path="/x", model_fingerprint="f" * 64, layer=2, pooling="last",
                          threshold=0.5, active=True, activated_at=T0)
        s.add(pv)
        s.flush()
        s.execute(insert(Sample), [dict(id=f"s{i:04d}", model=MODEL, ts=T0 + timedelta(seconds=i), prompt="q",
                                        answer="yes", status="scored") for i in range(40)])
        s.execute(insert(Score), [dict(sample_id=f"s{i:04d}", probe_version_id=pv.id, p_correct=0.95,
                                       created_at=T0 + timedelta(minutes=1)) for i in range(40)])
    run = run_spotcheck(sessions, settings, adapters={MODEL: object()}, now=T0 + timedelta(minutes=2),
                        rng=np.random.default_rng(0))
    assert run.reference_period == 40
    assert run.budget_scale == pytest.approx(14.0 / (40 * 0.35 * 2.0))  # 40 arrivals x 0.35 x 2 s prior = 28 s
    assert run.decisions and all(pi == pytest.approx(0.35 * run.budget_scale) for _, _, pi in run.decisions)
    with sessions() as s:
        assert all(p == pytest.approx(0.35 * run.budget_scale) for p in s.scalars(select(SpotCheck.inclusion_prob)))


def test_the_reference_rate_is_validated():
    with pytest.raises(ValueError, match="reference_rate"):
        Settings(spotcheck={"reference_rate": 1.5})
