"""`vlmwatch status` says, per active probe, which detectors are armed, what each still needs, and
when the human-label ones arm: reference labels had vs needed, with an estimate (#16 part 2b)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

import numpy as np

from monitor.calibration.reference import ensure_default_reference, set_reference
from monitor.commands.status import _arming_text, render_text
from monitor.detect import run_detect
from monitor.detect.readiness import needs, readiness
from monitor.detect.synthetic import BinormalProbe
from storage.models import ProbeVersion, utcnow


def test_readiness_names_what_each_detector_needs(world, fast_settings):
    settings = fast_settings()
    st = BinormalProbe().sample(1, 600, np.random.default_rng(1))
    world.add(st.scores[0], st.correct[0])  # labels, no spot checks
    run_detect(world.factory, settings, utcnow())
    with world.factory() as s:
        (probe,) = readiness(s, settings)
    rows = {d.detector: d for d in probe.detectors}
    assert probe.labels_armed and (probe.labelled, probe.reference) == (600, "default")
    assert rows["cusum_disagreement:human"].armed and rows["cusum_residual:human"].armed
    assert rows["adwin_scores"].armed
    sc = rows["cusum_disagreement:self_consistency"]
    assert not sc.armed and sc.needs == "100 more spot checks in the reference (0 of 100)"  # min_labels of the period
    assert rows["adwin_spotcheck"].needs == sc.needs
    text = render_text({"database": "x", "revision": "r", "tables": {"samples": 600}, "pending": {}, "totals": {},
                        "jobs": {}, "detectors": [asdict(probe)]})
    assert "m1 probe v1: human-label detectors armed (default reference, 600 labelled samples)" in text
    assert "cusum_disagreement:human" in text and "not armed: needs 100 more spot checks" in text


def test_default_reference_arms_after_reference_n_labels_a_pinned_one_at_once(world, fast_settings):
    settings = fast_settings()  # reference_n 600, min_labels 100
    rng = np.random.default_rng(0)
    world.add(rng.uniform(size=150), rng.uniform(size=150) < 0.8, seconds_apart=10)
    with world.factory() as s:
        (p,) = readiness(s, settings)
        assert p.reference == "none" and all(d.needs == "a reference (none yet)" for d in p.detectors)
        ensure_default_reference(s, settings, s.get(ProbeVersion, world.pv_id))
        s.commit()
        (p,) = readiness(s, settings)
    assert (p.model, p.reference, p.labelled, p.needed, p.labels_armed) == ("m1", "default", 150, 600, False)
    assert p.labels_last_hour == 150 and p.eta_hours == 3.0  # 450 more at 150 an hour
    assert {d.detector: d.needs for d in p.detectors}["cusum_residual:human"] == (
        "450 more human labels in the reference (150 of 600)")
    text = _arming_text(asdict(p))
    assert "150 of 600 labelled samples" in text and "about 3.0 h" in text and "reference set" in text
    with world.factory() as s:
        set_reference(s, settings, "m1", world.t0, world.t0 + timedelta(hours=1))
        s.commit()
        (p,) = readiness(s, settings)
    assert (p.reference, p.labelled, p.needed, p.labels_armed, p.eta_hours) == ("pinned", 150, 100, True, None)
    assert {d.detector: d.armed for d in p.detectors}["cusum_disagreement:human"]
    assert _arming_text(asdict(p)) == "armed (pinned reference, 150 labelled samples)"


def _decide_all(world):
    from sqlalchemy import update

    from storage.models import Sample

    with world.factory.begin() as s:
        s.execute(update(Sample).values(spotcheck_status="skipped"))


def test_default_spot_check_reference_is_the_reference_period_once_decided(world, fast_settings):
    settings = fast_settings()  # reference_n 600, min_labels 100
    rng = np.random.default_rng(4)
    world.add(rng.uniform(size=120), rng.uniform(size=120) < 0.8, label=False, spot_agreement=rng.uniform(size=120))
    world.add(rng.uniform(size=480), rng.uniform(size=480) < 0.8, label=False)  # period over, not yet decided
    with world.factory() as s:
        ref = ensure_default_reference(s, settings, s.get(ProbeVersion, world.pv_id))
        s.commit()
        assert ref.stats["self_consistency"]["n"] == 120 and not ref.stats["self_consistency"]["complete"]
        (p,) = readiness(s, settings)
    assert {d.detector: d.needs for d in p.detectors}["adwin_spotcheck"] == (
        "the rest of the reference period spot-checked (its first 600 scored samples; 120 checks so far)")
    _decide_all(world)
    world.add(rng.uniform(size=30), rng.uniform(size=30) < 0.8, label=False, spot_agreement=rng.uniform(size=30))
    with world.factory() as s:
        ref = ensure_default_reference(s, settings, s.get(ProbeVersion, world.pv_id))
        s.commit()
        assert ref.stats["self_consistency"]["n"] == 120 and ref.stats["self_consistency"]["complete"]
        (p,) = readiness(s, settings)
    assert {d.detector: d.armed for d in p.detectors}["adwin_spotcheck"]


def test_a_period_left_with_too_few_spot_checks_takes_the_first_min_labels(world, fast_settings):
    settings = fast_settings()  # reference_n 600, min_labels 100
    rng = np.random.default_rng(5)
    world.add(rng.uniform(size=50), rng.uniform(size=50) < 0.8, label=False, spot_agreement=rng.uniform(size=50))
    world.add(rng.uniform(size=550), rng.uniform(size=550) < 0.8, label=False)
    _decide_all(world)  # the budget left the period with 50 checks
    pv = world.pv_id
    with world.factory() as s:
        ref = ensure_default_reference(s, settings, s.get(ProbeVersion, pv))
        s.commit()
        assert ref.stats["self_consistency"]["n"] == 50 and not ref.stats["self_consistency"]["complete"]
        assert needs(ref, "adwin_spotcheck", settings.calibration) == "50 more spot checks in the reference (50 of 100)"
    world.add(rng.uniform(size=80), rng.uniform(size=80) < 0.8, label=False, spot_agreement=rng.uniform(size=80))
    with world.factory() as s:
        ref = ensure_default_reference(s, settings, s.get(ProbeVersion, pv))
        s.commit()
        assert ref.stats["self_consistency"]["n"] == 100 and ref.stats["self_consistency"]["complete"]
        assert needs(ref, "adwin_spotcheck", settings.calibration) is None
