"""ADWIN state is plain JSON (#15 item 5): a pickle payload from the database is refused, the
JSON state round-trips, and a tuning that misses its target says so."""

from __future__ import annotations

import base64
import json
import logging
import pickle

import numpy as np
import pytest
from sqlalchemy import select

from monitor.detect import run_detect
from monitor.detect.adwin import MAX_WINDOW, AdwinDetector, UntrustedStateError
from monitor.detect.synthetic import BinormalProbe
from monitor.detect.tuning import tune_adwin
from storage.models import DetectorState, utcnow


class _Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle executed')",))


def test_pickle_payload_is_refused():
    state = {"delta": 0.002, "n": 1, "adwin": base64.b64encode(pickle.dumps(_Boom())).decode()}
    with pytest.raises(UntrustedStateError, match="pickle payload"):
        AdwinDetector(0.002, state)


def test_json_state_round_trips_and_is_bounded():
    rng = np.random.default_rng(1)
    a = AdwinDetector(0.002)
    a.update_many(rng.normal(0.7, 0.05, 3000))
    state = json.loads(json.dumps(a.to_state()))  # through JSON, as the database stores it
    assert "adwin" not in state and len(state["window"]) == a.width
    b = AdwinDetector(0.002, state)
    assert b.width == a.width and b.n == 3000 and b.estimation == pytest.approx(a.estimation, abs=1e-5)
    hits = b.update_many(rng.normal(0.5, 0.05, 500))
    assert hits and b.mean_after < b.mean_before
    c = AdwinDetector(0.002)
    c.update_many(rng.normal(0.7, 0.05, MAX_WINDOW + 2000))
    assert len(c.to_state()["window"]) == MAX_WINDOW


def test_runner_refuses_pickled_state_from_the_database(world, fast_settings, caplog):
    st = BinormalProbe().sample(1, 700, np.random.default_rng(3))
    world.add(st.scores[0], st.correct[0], seconds_apart=60, label=False)
    settings = fast_settings()
    with world.factory() as s:
        s.add(DetectorState(model="m1", probe_version_id=world.pv_id, detector="adwin_scores", cursor=0,
                            state={"delta": 0.002, "adwin": base64.b64encode(pickle.dumps(_Boom())).decode()}))
        s.commit()
    with caplog.at_level(logging.ERROR, logger="monitor.detect.runner"):
        run_detect(world.factory, settings, utcnow())  # no SystemExit: nothing unpickled
    assert any("pickle payload" in r.getMessage() for r in caplog.records)
    with world.factory() as s:
        row = s.scalars(select(DetectorState).filter_by(detector="adwin_scores")).one()
        assert "adwin" not in row.state and isinstance(row.state["window"], list)


def test_adwin_tuning_that_misses_its_target_says_so(caplog):
    values = np.random.default_rng(0).pareto(0.3, 200)  # extreme heavy tail: every delta tried alarms often
    with caplog.at_level(logging.WARNING, logger="monitor.detect.tuning"):
        t = tune_adwin(values, start_delta=1.0, target=0.01, horizon=3000, simulations=20,
                       rng=np.random.default_rng(0))
    assert t.delta == pytest.approx(1e-4) and t.simulated_false_alarm_rate > 0.01
    assert t.met_target is False and t.params()["met_target"] is False
    assert any("MISSED its target" in r.getMessage() for r in caplog.records)
    ok = tune_adwin(np.random.default_rng(1).normal(0.8, 0.05, 500), target=0.05, horizon=2000, simulations=20,
                    rng=np.random.default_rng(1))
    assert ok.met_target is True
