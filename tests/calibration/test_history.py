"""The calibration-history job on a real database: rows per window and source, partial windows,
idempotent re-runs, late evidence, the default and the pinned reference (CLI)."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import func, select

from monitor.calibration.history import run_calibrate
from monitor.calibration.reference import CalibrationReferenceError, set_reference
from monitor.commands.reference import parse_window
from monitor.detect.synthetic import BinormalProbe
from storage.models import CalibrationWindow, Label, Reference, Score, utcnow


def _stream(n, seed):
    st = BinormalProbe().sample(1, n, np.random.default_rng(seed))
    return st.scores[0], st.correct[0]


def test_windows_sources_partial_and_idempotent(world, fast_settings):
    settings = fast_settings()
    s, y = _stream(400, 1)
    # 250 samples in one hour (ground truth), 150 in the next (only 60 of them labelled), all spot-checked
    agree = np.where(y, 0.9, 0.2)
    world.add(s[:250], y[:250], seconds_apart=10, spot_agreement=agree[:250])
    start2 = world.t0 + timedelta(hours=1)
    world.add(s[250:310], y[250:310], seconds_apart=10, start=start2)
    world.add(s[310:], y[310:], seconds_apart=10, start=start2 + timedelta(minutes=12), label=False)
    now = utcnow()
    written = run_calibrate(world.factory, settings, now)
    assert written > 0
    with world.factory() as ses:
        rows = {(r.kind, r.source, r.window_start): r for r in ses.scalars(select(CalibrationWindow))}
    h0 = world.t0.replace(minute=0, second=0)
    full = rows[("time", "human", h0)]
    assert full.n == 250 and not full.partial
    m = full.metrics
    assert m["auroc_ci"][0] <= full.auroc <= m["auroc_ci"][1] and full.ece == m["ece_mass"]
    assert {"ece_width", "ece_width_ci", "r_pb_ci", "brier_ci", "est_accuracy_ci", "agreement_ci"} <= set(m)
    assert rows[("time", "self_consistency", h0)].n == 250
    combined = rows[("time", "combined", h0)]
    assert combined.n == 500  # both sources' rows, mixed with the fixed shares (0.5 / 0.5)
    assert combined.agreement == pytest.approx(0.5 * full.agreement + 0.5 * rows[("time", "self_consistency", h0)].agreement)
    second = [r for k, r in rows.items() if k[0] == "time" and k[1] == "human" and k[2] != h0]
    assert len(second) == 1 and second[0].n == 60 and second[0].partial  # < min_labels: partial
    rolling = rows[next(k for k in rows if k[:2] == ("rolling", "combined"))]
    assert rolling.n == 300 + 250  # the newest rolling_n of each source
    # idempotent: a re-run with nothing new writes nothing and changes nothing
    assert run_calibrate(world.factory, settings, now) == 0
    with world.factory() as ses:
        assert ses.scalar(select(func.count()).select_from(CalibrationWindow)) == len(rows)
    # late labels for the second hour update that window in place
    with world.factory() as ses:
        unlabelled = [f"s{i:06d}" for i in range(310, 400)]
        for sid, c in zip(unlabelled, y[310:]):
            ses.add(Label(sample_id=sid, correct=bool(c), source="human"))
        ses.commit()
    run_calibrate(world.factory, settings, now + timedelta(minutes=1))
    with world.factory() as ses:
        again = ses.scalars(select(CalibrationWindow).filter_by(kind="time", source="human",
                                                               window_start=second[0].window_start)).one()
        assert again.id == second[0].id and again.n == 150 and not again.partial


def test_late_scores_recompute_windows(world, fast_settings):
    settings = fast_settings()
    s, y = _stream(200, 2)
    ids = world.add(s, y, score=False, seconds_apart=5)
    run_calibrate(world.factory, settings)
    with world.factory() as ses:
        assert ses.scalar(select(func.count()).select_from(CalibrationWindow)) == 0
        for sid, p in zip(ids, s):
            ses.add(Score(sample_id=sid, probe_version_id=world.pv_id, p_correct=float(p)))
        ses.commit()
    run_calibrate(world.factory, settings)
    with world.factory() as ses:
        assert ses.scalars(select(CalibrationWindow).filter_by(kind="time", source="human")).one().n == 200


def test_default_reference_then_pinned_by_cli(world, fast_settings, db_url, vlmwatch_cli):
    settings = fast_settings()
    s, y = _stream(700, 3)
    world.add(s, y, seconds_apart=60)
    run_calibrate(world.factory, settings)
    with world.factory() as ses:
        ref = ses.scalars(select(Reference).where(Reference.active.is_(True))).one()
        assert not ref.pinned and ref.stats["human"]["n"] == 600 and ref.stats["human"]["complete"]
        assert abs(ref.stats["human"]["disagreement"] - 0.10) < 0.04
    start = world.t0 + timedelta(minutes=100)
    end = world.t0 + timedelta(minutes=400)
    window = f"{start.isoformat()}..{end.isoformat()}"
    res = vlmwatch_cli("reference", "set", "--model", "m1", "--window", window, db_url=db_url)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["human"]["n"] == 300
    with world.factory() as ses:
        active = ses.scalars(select(Reference).where(Reference.active.is_(True))).all()
        assert len(active) == 1 and active[0].pinned and active[0].id == out["reference_id"]
    with world.factory() as ses:
        with pytest.raises(CalibrationReferenceError, match="calibration.min_labels"):
            set_reference(ses, settings, "m1", start - timedelta(days=30), start - timedelta(days=29))
        with pytest.raises(CalibrationReferenceError, match="'nope'"):
            set_reference(ses, settings, "nope", start, end)
    with pytest.raises(argparse.ArgumentTypeError, match="START..END"):
        parse_window("yesterday")
    with pytest.raises(argparse.ArgumentTypeError, match="not after start"):
        parse_window(f"{end.isoformat()}..{start.isoformat()}")


def test_self_consistency_windows_weight_spot_checks_by_their_inclusion_probability(world, fast_settings):
    from sqlalchemy import update

    from monitor.calibration.metrics import window_metrics
    from storage.models import SpotCheck

    settings = fast_settings()
    s, y = _stream(300, 5)
    agreement = np.where(y, 0.5, 0.2)  # 0.5 exactly: correct (spotcheck_correct: agreement >= 0.5)
    ids = world.add(s, y, seconds_apart=5, label=False, spot_agreement=agreement)
    pi = np.where(np.abs(s - 0.5) < 0.2, 1.0, 0.1)  # the boundary oversampled ten to one
    with world.factory() as ses:
        for sid, p in zip(ids, pi):
            ses.execute(update(SpotCheck).where(SpotCheck.sample_id == sid).values(inclusion_prob=float(p)))
        ses.commit()
    run_calibrate(world.factory, settings, utcnow())
    with world.factory() as ses:
        row = ses.scalars(select(CalibrationWindow).filter_by(kind="time", source="self_consistency")
                          .order_by(CalibrationWindow.n.desc())).first()
    m = row.metrics
    assert row.n == 300 and m["weighted"]
    expect = window_metrics(s, y, bootstrap=0, weights=1.0 / pi)
    plain = window_metrics(s, y, bootstrap=0)
    for key in ("agreement", "accuracy", "brier", "auroc", "ece_mass"):
        assert m[key] == pytest.approx(expect[key], abs=1e-9), key
    assert abs(m["agreement"] - plain["agreement"]) > 0.02  # the weights matter here
    assert m["agreement_ci"][0] <= m["agreement"] <= m["agreement_ci"][1]


def test_a_label_flip_and_flip_back_reach_the_windows_and_the_revision_events(world, fast_settings):
    from monitor.calibration.revisions import load_revisions
    from storage.records import LabelRecord
    from storage.repo_labels import add_labels

    settings = fast_settings()
    s, y = _stream(200, 6)
    ids = world.add(s, y, seconds_apart=5, source="human")
    run_calibrate(world.factory, settings, utcnow())

    def window():
        with world.factory() as ses:
            return ses.scalars(select(CalibrationWindow).filter_by(kind="time", source="human")
                               .order_by(CalibrationWindow.n.desc())).first()

    before = window()
    assert before.n == 200
    sid, old = ids[0], bool(y[0])

    def relabel(correct):
        with world.factory.begin() as ses:
            res = add_labels(ses, [LabelRecord(correct=correct, source="human", sample_id=sid)])
        assert res.updated == 1

    relabel(not old)
    assert run_calibrate(world.factory, settings, utcnow()) > 0
    flipped = window()
    assert flipped.id == before.id
    assert flipped.metrics["accuracy"] == pytest.approx(before.metrics["accuracy"] + (-1 if old else 1) / 200)
    with world.factory() as ses:
        (ev,) = load_revisions(ses, "m1", world.pv_id)
    assert ev.retract.row_id == ev.add.row_id and ev.retract.sample_id == sid and ev.first_for_sample
    assert (ev.retract.correct, ev.add.correct) == (old, not old)
    relabel(old)  # and back
    run_calibrate(world.factory, settings, utcnow())
    back = window()
    assert back.metrics["accuracy"] == pytest.approx(before.metrics["accuracy"])
    assert back.auroc == pytest.approx(before.auroc)
    with world.factory() as ses:
        events = load_revisions(ses, "m1", world.pv_id)
        assert [(e.retract.correct, e.add.correct) for e in events] == [(old, not old), (not old, old)]
        assert load_revisions(ses, "m1", world.pv_id, after_id=events[0].revision_id)[0] == events[1]
    # sending the same verdict again is no revision
    with world.factory.begin() as ses:
        assert add_labels(ses, [LabelRecord(correct=old, source="human", sample_id=sid)]).unchanged == 1
    with world.factory() as ses:
        assert len(load_revisions(ses, "m1", world.pv_id)) == 2
