"""run_spotcheck on a real database (sqlite + postgres) with the shipped tiny LLaVA."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import select

from monitor.config import Settings
from monitor.spotcheck.answers import content_words, normalize_answer
from monitor.spotcheck.job import run_spotcheck
from monitor.spotcheck.policy import SelectionPolicy
from storage.db import session_factory
from storage.models import Image, Label, ProbeVersion, Sample, Score, SpotCheck

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
MODEL = "tiny-llava"


@pytest.fixture(scope="module")
def adapter():
    from monitor.adapter import load_vlm
    from monitor.fixtures.registry import fixture_dir

    return load_vlm(fixture_dir(MODEL), device="cpu")


def _settings(**spot):
    from monitor.fixtures.registry import fixture_dir

    base = dict(k=4, max_new_tokens=4, rate=1.0)
    base.update(spot)
    return Settings(models={MODEL: {"path": str(fixture_dir(MODEL))}}, spotcheck=base)


def _png(rgb):
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.new("RGB", (64, 64), rgb).save(buf, format="PNG")
    return buf.getvalue()


def _seed(sessions, n=6, scored_at=NOW - timedelta(minutes=5)):
    answers = ["yes", "a red square", "No.", "two circles", "yes", "there is a cat"]
    with sessions.begin() as s:
        pv = ProbeVersion(model=MODEL, version="v1", path="/nowhere", model_fingerprint="f" * 64, layer=2,
                          pooling="last", threshold=0.5, active=True)  # fmt: skip
        s.add(pv)
        s.flush()
        for i in range(n):
            data = _png((40 * i % 256, 90, 200 - 20 * i))
            sha = f"{i:064x}"
            s.add(Image(sha256=sha, size=len(data), format="PNG", width=64, height=64, data=data))
            s.add(Sample(id=f"s{i}", model=MODEL, ts=NOW - timedelta(minutes=30 - i), prompt="is there a cat?",
                         answer=answers[i % len(answers)], image_sha256=sha, status="scored"))  # fmt: skip
            s.flush()
            s.add(Score(sample_id=f"s{i}", probe_version_id=pv.id, p_correct=0.1 + 0.15 * i, created_at=scored_at))


def test_checks_are_stored_as_spot_checks_and_self_consistency_labels(engine, adapter):
    sessions = session_factory(engine)
    _seed(sessions)
    run = run_spotcheck(sessions, _settings(), adapters={MODEL: adapter}, now=NOW, rng=np.random.default_rng(0))
    assert run.candidates == 6 and run.processed == 6 and not run.budget_exhausted
    with sessions() as s:
        checks = {c.sample_id: c for c in s.scalars(select(SpotCheck))}
        labels = {lab.sample_id: lab for lab in s.scalars(select(Label))}
        samples = {x.id: x for x in s.scalars(select(Sample))}
    assert set(checks) == set(labels) == set(samples)
    for sid, c in checks.items():
        lab = labels[sid]
        assert lab.source == "self_consistency" and lab.value == pytest.approx(c.agreement)
        served = normalize_answer(samples[sid].answer)
        group = served if served in ("yes", "no") else content_words(samples[sid].answer)  # free text: content words
        assert lab.correct == (c.majority_answer == group)
        assert c.inclusion_prob == 1.0 and c.reason in ("uniform", "boundary") and c.compute_seconds > 0
        assert samples[sid].spotcheck_status == "done"
        assert c.one_token == (served in ("yes", "no"))
        assert c.k == (0 if c.one_token else 4)
        if c.one_token:
            assert c.support is None
        else:  # each content word of the served answer, with the share of the K samples that use it
            assert set(c.support) == set(group.split()) and all(0.0 <= v <= 1.0 for v in c.support.values())
        total = sum(c.groups.values())
        assert total == pytest.approx(1.0 if c.one_token else 4.0)
    again = run_spotcheck(sessions, _settings(), adapters={MODEL: adapter}, now=NOW)
    assert again.candidates == 0 and again.processed == 0


def test_selection_records_the_inclusion_probability(engine, adapter):
    sessions = session_factory(engine)
    _seed(sessions, scored_at=NOW - timedelta(hours=2))  # no recent arrivals: no budget scaling
    settings = _settings(rate=0.4)
    run = run_spotcheck(sessions, settings, adapters={MODEL: adapter}, now=NOW, rng=np.random.default_rng(5))
    assert run.processed + run.skipped == 6 and run.budget_scale == 1.0
    pol = SelectionPolicy(0.4, 0.3, 0.15, 600.0)
    pi, _ = pol.probabilities(np.array([0.1 + 0.15 * i for i in range(6)]), 0.5)
    with sessions() as s:
        checks = list(s.scalars(select(SpotCheck)))
        statuses = dict(s.execute(select(Sample.id, Sample.spotcheck_status)).all())
    for c in checks:
        assert c.inclusion_prob == pytest.approx(pi[int(c.sample_id[1:])])
    assert sorted(statuses.values()) == sorted(["done"] * run.processed + ["skipped"] * run.skipped)


def test_a_tiny_budget_stops_selection_and_says_so(engine, adapter):
    sessions = session_factory(engine)
    _seed(sessions, scored_at=NOW - timedelta(hours=2))
    tiny = _settings(gpu_seconds_per_hour=1e-6)
    run = run_spotcheck(sessions, tiny, adapters={MODEL: adapter}, now=NOW, rng=np.random.default_rng(1))
    # the first check spends more than the hour's budget; nothing more is decided
    assert run.processed == 1 and run.budget_exhausted and run.stopped == "budget" and run.undecided == 5
    nxt = run_spotcheck(sessions, tiny, adapters={MODEL: adapter}, now=NOW + timedelta(minutes=10))
    assert nxt.processed == 0 and nxt.budget_exhausted and nxt.budget_scale == 0.0 and nxt.undecided == 5
    with sessions() as s:
        pending = s.scalars(select(Sample.id).where(Sample.spotcheck_status == "pending")).all()
    assert len(pending) == 5  # left for a later hour, never dropped
    later = run_spotcheck(sessions, tiny, adapters={MODEL: adapter}, now=NOW + timedelta(hours=2))
    assert later.processed == 1 and later.budget_exhausted


def test_arrivals_beyond_the_budget_scale_the_probabilities_down(engine, adapter):
    sessions = session_factory(engine)
    _seed(sessions)  # 6 arrivals in the last hour x rate 1 x 2 s prior = 12 s expected
    run = run_spotcheck(sessions, _settings(gpu_seconds_per_hour=3.0), adapters={MODEL: adapter}, now=NOW,
                        rng=np.random.default_rng(2))  # fmt: skip
    assert run.budget_scale == pytest.approx(3.0 / 12.0)
    with sessions() as s:
        probs = s.scalars(select(SpotCheck.inclusion_prob)).all()
    assert all(p <= 0.25 * 3.4 + 1e-9 for p in probs)  # scaled, the boundary boost still applies


def test_unreadable_images_are_skipped_and_counted(engine, adapter):
    sessions = session_factory(engine)
    _seed(sessions, n=3, scored_at=NOW - timedelta(hours=2))
    with sessions.begin() as s:
        s.get(Image, f"{1:064x}").data = b"not an image"
        s.get(Image, f"{2:064x}").data = None  # purged
    run = run_spotcheck(sessions, _settings(), adapters={MODEL: adapter}, now=NOW)
    assert run.processed == 1 and run.missing_image == 2 and run.failed == 0
    with sessions() as s:
        statuses = dict(s.execute(select(Sample.id, Sample.spotcheck_status)).all())
    assert statuses == {"s0": "done", "s1": "skipped", "s2": "skipped"}


def test_the_daemon_call_loads_models_from_settings_and_honours_stop(engine):
    sessions = session_factory(engine)
    _seed(sessions, n=3, scored_at=NOW - timedelta(hours=2))
    stopped = run_spotcheck(sessions, _settings(), now=NOW, worker="w1", should_stop=lambda: True)
    assert stopped.stopped == "stop" and stopped.processed == 0 and stopped.undecided == 3
    # the daemon's call: no adapters given -> loaded from settings.models once per process
    run = run_spotcheck(sessions, _settings(), now=NOW, worker="w1", should_stop=lambda: False)
    assert run.processed == 3 and run.undecided == 0 and run.by_model == {MODEL: 3}
