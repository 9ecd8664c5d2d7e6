"""Pending evidence stays bounded without log spam (#15 item 7): drops are counted in the detector
state and logged at most once per detect run, whatever the number of detectors."""

from __future__ import annotations

import logging
from datetime import timedelta

import numpy as np
from sqlalchemy import select

import monitor.detect.runner as runner
from monitor.detect import run_detect
from monitor.detect.synthetic import BinormalProbe
from storage.models import DetectorState, utcnow


def test_pending_drops_are_counted_and_logged_once_per_run(world, fast_settings, monkeypatch, caplog):
    monkeypatch.setattr(runner, "MAX_PENDING", 20)
    settings = fast_settings()
    st = BinormalProbe().sample(1, 760, np.random.default_rng(4))
    world.add(st.scores[0][:600], st.correct[0][:600])  # the reference
    now = utcnow()
    run_detect(world.factory, settings, now)
    warnings_per_run = []
    for i in range(3):  # every run: 50 more labels whose samples are never scored (never sampled)
        world.add(st.scores[0][600 + 50 * i:650 + 50 * i], st.correct[0][600 + 50 * i:650 + 50 * i], score=False)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="monitor.detect.runner"):
            run_detect(world.factory, settings, now + timedelta(minutes=i + 1))
        warnings_per_run.append([r.getMessage() for r in caplog.records if "dropped" in r.getMessage()])
    assert [len(w) for w in warnings_per_run] == [1, 1, 1]
    assert "dropped 60 evidence id(s)" in warnings_per_run[0][0]  # 30 per labelled detector (2 of them)
    with world.factory() as s:
        rows = {r.detector: r.state for r in s.scalars(select(DetectorState))}
    for name in ("cusum_disagreement:human", "cusum_residual:human"):
        assert len(rows[name]["pending"]) == 20 and rows[name]["pending_dropped"] == 130  # 150 waiting - 20 kept
