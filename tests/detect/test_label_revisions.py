"""A label flip reaches the detectors: a corrected verdict is retracted and re-added in the
labelled detectors' state, a flip back undoes it, and a mass flip raises the disagreement alert."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy import select

from monitor.calibration.history import run_calibrate
from monitor.detect import run_detect
from monitor.detect.synthetic import BinormalProbe
from storage.models import DetectorState, Label, Score, utcnow
from storage.repo_labels import LabelRecord, add_labels

PROBE = BinormalProbe()
NAME = "cusum_disagreement:human"


def _stream(n, seed):
    st = PROBE.sample(1, n, np.random.default_rng(seed))
    return st.scores[0], st.correct[0]


def _det(world):
    with world.factory() as s:
        return s.scalars(select(DetectorState).filter_by(detector=NAME)).one().state["detector"]


def _flip(world, sids):
    """Send the opposite verdict for ``sids`` through storage (the labels keep their ids)."""
    with world.factory() as s:
        old = dict(s.execute(select(Label.sample_id, Label.correct).where(Label.sample_id.in_(sids))).all())
        res = add_labels(s, [LabelRecord(correct=not old[sid], source="ground_truth", sample_id=sid) for sid in sids])
        assert not res.rejected
        s.commit()


def _disagreeing_after_flip(world, sids):
    with world.factory() as s:
        rows = s.execute(select(Label.sample_id, Label.correct, Score.p_correct).join(
            Score, Score.sample_id == Label.sample_id).where(Label.sample_id.in_(sids))).all()
    return sum((p >= 0.5) == c for _, c, p in rows)  # each flip turns agreement into disagreement and back


def _rule_events(res, rule_prefix="probe_disagreement"):
    return [t.event for t in res.transitions if t.rule.startswith(rule_prefix)]


def test_flip_and_flip_back_reach_the_detector(world, fast_settings):
    settings = fast_settings()
    world.add(*_stream(600, seed=1))  # the reference
    now = utcnow()
    run_calibrate(world.factory, settings, now)
    run_detect(world.factory, settings, now)
    monitored = world.add(*_stream(300, seed=2))
    run_detect(world.factory, settings, now + timedelta(minutes=1))
    before = _det(world)
    assert before["n"] == 300
    sids = monitored[:10]
    became = _disagreeing_after_flip(world, sids)  # how many of the 10 disagree once flipped
    _flip(world, sids)
    run_detect(world.factory, settings, now + timedelta(minutes=2))
    flipped = _det(world)
    assert flipped["n"] == 300  # a correction is not a new label
    assert flipped["ones"] == before["ones"] + became - (10 - became)
    assert flipped["checkpoints"][-1][0] == before["checkpoints"][-1][0] + 2 * became - 10
    _flip(world, sids)  # and back
    run_detect(world.factory, settings, now + timedelta(minutes=3))
    back = _det(world)
    assert back["ones"] == before["ones"] and back["n"] == 300
    assert np.allclose(back["checkpoints"][-1], before["checkpoints"][-1])
    run_detect(world.factory, settings, now + timedelta(minutes=4))  # nothing new: applied once only
    assert _det(world)["ones"] == before["ones"]


def test_reference_and_unconsumed_labels_are_not_retracted(world, fast_settings):
    settings = fast_settings()
    ref_ids = world.add(*_stream(600, seed=1))
    now = utcnow()
    run_calibrate(world.factory, settings, now)
    run_detect(world.factory, settings, now)
    world.add(*_stream(100, seed=2))
    run_detect(world.factory, settings, now + timedelta(minutes=1))
    before = _det(world)
    _flip(world, ref_ids[:20])  # reference labels: the reference, not monitored evidence
    new = world.add(*_stream(50, seed=3))
    _flip(world, new[:20])  # flipped before the detector read them: read once, with the new verdict
    run_detect(world.factory, settings, now + timedelta(minutes=2))
    with world.factory() as s:
        read = s.execute(select(Label.correct, Score.p_correct).join(Score, Score.sample_id == Label.sample_id)
                         .where(Label.sample_id.in_(new))).all()
    after = _det(world)
    assert after["n"] == 150
    assert after["ones"] == before["ones"] + sum((p >= 0.5) != c for c, p in read)


def test_mass_flip_raises_the_disagreement_alert(world, fast_settings):
    settings = fast_settings()
    world.add(*_stream(600, seed=1))
    now = utcnow()
    run_calibrate(world.factory, settings, now)
    run_detect(world.factory, settings, now)
    monitored = world.add(*_stream(400, seed=4))
    res = run_detect(world.factory, settings, now + timedelta(minutes=1))
    assert "firing" not in _rule_events(res)
    res = run_detect(world.factory, settings, now + timedelta(minutes=2))  # no flip: still quiet
    assert "firing" not in _rule_events(res) and _det(world)["stat"] <= _det(world)["h"]
    # the reviewers correct 100 agreeing labels of the last 200: the disagreement rate there jumps
    with world.factory() as s:
        rows = s.execute(select(Label.sample_id, Label.correct, Score.p_correct).join(
            Score, Score.sample_id == Label.sample_id).where(Label.sample_id.in_(monitored[-200:]))).all()
    agreeing = [sid for sid, c, p in rows if (p >= 0.5) == c][:100]
    _flip(world, agreeing)
    res = run_detect(world.factory, settings, now + timedelta(minutes=3))
    assert _rule_events(res) == ["firing"]
    assert _det(world)["stat"] > _det(world)["h"]
