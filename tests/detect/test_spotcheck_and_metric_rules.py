"""Self-consistency evidence drives its own detectors; `detector: metric` rules read the history."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy import select

from monitor.calibration.history import run_calibrate
from monitor.detect import run_detect
from monitor.detect.synthetic import BinormalProbe
from storage.models import Alert, DetectorState, utcnow


def test_self_consistency_detectors_and_metric_rule(world, fast_settings):
    rules = [
        {"name": "sc_disagreement", "detector": "cusum_disagreement", "severity": "warning"},
        {"name": "sc_agreement_shift", "detector": "adwin_spotcheck", "severity": "info"},
        {"name": "auroc_low", "detector": "metric", "source": "combined", "metric": "auroc", "op": "<", "threshold": 0.75, "resolve_after": 1},
    ]
    settings = fast_settings(rules=rules)
    rng = np.random.default_rng(11)
    st = BinormalProbe().sample(1, 900, rng)
    # spot checks only (no human labels): agreement high for correct answers, low for wrong ones
    agree = np.where(st.correct[0], rng.uniform(0.6, 1.0, 900), rng.uniform(0.0, 0.4, 900))
    world.add(st.scores[0], st.correct[0], label=False, spot_agreement=agree, seconds_apart=30)
    now = utcnow()
    run_calibrate(world.factory, settings, now)
    res = run_detect(world.factory, settings, now)
    by = {(s.detector, s.window.get("source")): s for s in res.signals}
    assert by[("cusum_disagreement", "self_consistency")].status == "clear"
    assert by[("cusum_disagreement", "human")].status == "partial"  # no human labels: no reference
    assert by[("adwin_spotcheck", None)].status == "clear"
    with world.factory() as s:
        st_row = s.scalars(select(DetectorState).filter_by(detector="cusum_disagreement:self_consistency")).one()
        assert st_row.state["detector"]["n"] == 300  # 900 - the 600 of the reference
    # a probe that lost its signal: scores unrelated to correctness
    bad = np.random.default_rng(12).uniform(0.3, 0.95, 900)
    world.add(bad, st.correct[0], label=False, spot_agreement=agree, seconds_apart=30)
    run_calibrate(world.factory, settings, now + timedelta(minutes=1))
    res = run_detect(world.factory, settings, now + timedelta(minutes=1))
    with world.factory() as s:
        firing = {a.rule: a for a in s.scalars(select(Alert).where(Alert.state == "firing"))}
    assert "sc_disagreement" in firing and "auroc_low" in firing
    auroc = firing["auroc_low"].metrics
    assert auroc["auroc"] < 0.75 and auroc["auroc_ci"][1] < 0.75  # the whole CI below the threshold
    assert firing["auroc_low"].window["kind"] == "rolling" and firing["auroc_low"].window["n"] == 300


def test_metric_rules_read_their_own_source(world, fast_settings):
    """Two AUROC rules on different sources: only the one whose source lost its signal fires."""
    rules = [{"name": f"auroc_low_{src}", "detector": "metric", "source": src, "metric": "auroc", "op": "<",
              "threshold": 0.75, "resolve_after": 1} for src in ("human", "self_consistency")]
    settings = fast_settings(rules=rules)
    rng = np.random.default_rng(21)
    st = BinormalProbe().sample(1, 900, rng)
    # human labels follow the probe; the spot checks are noise unrelated to correctness
    world.add(st.scores[0], st.correct[0], spot_agreement=rng.uniform(0.0, 1.0, 900), seconds_apart=30)
    now = utcnow()
    run_calibrate(world.factory, settings, now)
    res = run_detect(world.factory, settings, now)
    by = {s.window.get("source"): s for s in res.signals if s.detector == "metric"}
    assert set(by) == {"human", "self_consistency", "combined"}
    assert by["human"].metrics["auroc_ci"][0] > 0.75 and by["self_consistency"].metrics["auroc_ci"][1] < 0.75
    with world.factory() as s:
        firing = {a.rule: a for a in s.scalars(select(Alert).where(Alert.state == "firing"))}
    assert set(firing) == {"auroc_low_self_consistency"}
    assert firing["auroc_low_self_consistency"].window["source"] == "self_consistency"
