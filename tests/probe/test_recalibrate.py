"""``vlmwatch probe recalibrate`` on stored scores (synthetic probe, SQLite and PostgreSQL).

The real-model case (the demo's shift on the fixture LLaVA) is in test_recalibrate_demo_shift.py.
"""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select

from monitor.calibration.metrics import auroc, ece
from monitor.cli import main
from monitor.probe.artifact import load_artifact
from storage.db import session_factory
from storage.models import DetectorState, ProbeVersion, Reference
from tests.probe.recal_world import MODEL, T0, config_file, draw, make_probe, seed_labels

DRIFT = {"slope": 1.0, "shift": -2.0}  # the probe is overconfident by a constant log-odds: ranking intact


@pytest.fixture
def sessions(engine):
    return session_factory(engine)


def _run(capsys, cfg, *args: str) -> tuple[int, dict | str]:
    rc = main(["--config", str(cfg), "probe", "recalibrate", "--model", MODEL, *args])
    out = capsys.readouterr()
    if "--json" in args:
        return rc, json.loads(out.out) if out.out.strip() else out.err
    return rc, out.out + out.err


def _versions(sessions) -> dict[str, bool]:
    with sessions() as s:
        return {r.version: r.active for r in s.scalars(select(ProbeVersion).where(ProbeVersion.model == MODEL))}


def test_recalibration_refits_on_the_freshest_labels_as_a_new_version(db_url, sessions, tmp_path, capsys):
    probe, pv_id = make_probe(tmp_path, sessions)
    # 60 older labels from before the drift, then 200 drifted ones: only the freshest 200 are used
    seed_labels(sessions, probe.head, pv_id, 60, slope=1.0, shift=0.0, seed=1, prefix="old")
    seed_labels(sessions, probe.head, pv_id, 200, **DRIFT, seed=2, start=T0 + timedelta(hours=1), prefix="new")
    cfg = config_file(tmp_path, db_url)

    rc, doc = _run(capsys, cfg, "--json")
    assert rc == 0, doc
    assert doc["status"] == "registered" and doc["new_probe"]["active"] is False
    assert doc["labels"]["n"] == 200 and doc["labels"]["first_ts"] == (T0 + timedelta(hours=1)).isoformat()
    assert doc["advice"]["action"] == "recalibrate", doc["advice"]
    # the command's own held-out (out-of-fold) figures: calibration fixed, ranking untouched
    assert doc["after"]["ece_mass"] < doc["before"]["ece_mass"] - 0.1
    assert doc["after"]["ece_width"] < doc["before"]["ece_width"] - 0.1
    assert doc["after"]["auroc_ci"][0] <= doc["before"]["auroc"] <= doc["after"]["auroc_ci"][1]
    assert {c["method"] for c in doc["selection"]["candidates"]} == {"current", "temperature", "platt", "isotonic"}
    chosen = doc["selection"]["method"]
    assert chosen in ("platt", "isotonic")  # a constant offset: temperature scaling alone cannot fix it
    assert doc["selection"]["reason"]
    versions = _versions(sessions)
    assert versions == {probe.meta.version: True, doc["new_probe"]["version"]: False}

    new = load_artifact(doc["new_probe"]["path"])
    assert new.path.parent == probe.path.parent  # default: beside the active probe's folder
    assert (new.meta.layer, new.meta.pooling, new.meta.hidden_size) == (probe.meta.layer, probe.meta.pooling, 32)
    assert new.meta.calibration == chosen and new.onnx_path.is_file()
    recal = new.meta.extra["recalibration"]
    assert recal["recalibrates"]["version"] == probe.meta.version and recal["head_version"] == probe.meta.version
    assert recal["labels"]["n"] == 200 and recal["labels"]["sample_ids"] == [f"new{i:04d}" for i in range(200)]
    assert new.meta.metrics["recalibration"]["after"] == doc["after"]
    cos = float(np.dot(new.head.weight, probe.head.weight)
                / np.linalg.norm(new.head.weight) / np.linalg.norm(probe.head.weight))
    assert cos == pytest.approx(1.0, abs=1e-6)  # the same linear direction: the same head

    # on fresh draws of the drifted world the new version is calibrated and ranks the same
    x, y = draw(probe.head, 4000, **DRIFT, seed=77)
    p_old, p_new = probe.head.predict(x), new.head.predict(x)
    assert ece(p_new, y) < ece(p_old, y) / 3
    assert auroc(p_new, y) == pytest.approx(auroc(p_old, y), abs=0.005)

    # --activate (with a named method) switches the active version; the old one stays registered
    rc, doc2 = _run(capsys, cfg, "--json", "--activate", "--method", "temperature", "--max-labels", "150")
    assert rc == 0, doc2
    assert doc2["status"] == "activated" and doc2["selection"]["method"] == "temperature"
    assert doc2["labels"]["n"] == 150
    assert _versions(sessions)[doc2["new_probe"]["version"]] is True
    assert _versions(sessions)[probe.meta.version] is False


def test_text_report_names_the_choice_and_the_figures(db_url, sessions, tmp_path, capsys):
    probe, pv_id = make_probe(tmp_path, sessions)
    seed_labels(sessions, probe.head, pv_id, 150, **DRIFT, seed=4)
    rc, out = _run(capsys, config_file(tmp_path, db_url), "--activate")
    assert rc == 0, out
    for text in ("150 freshest labels", "<- ", "ECE equal-mass", "ECE equal-width", "AUROC", "recalibrate with",
                 "registered and activated", "fresh reference"):
        assert text in out, out


def test_refusals_name_what_is_missing(db_url, sessions, tmp_path, capsys):
    cfg = config_file(tmp_path, db_url, f"models:\n  {MODEL}:\n    path: {tmp_path}\n")
    rc, out = _run(capsys, cfg)
    assert rc == 2 and "no active probe" in out, out
    rc = main(["--config", str(cfg), "probe", "recalibrate", "--model", "nope"])
    assert rc == 2 and "model 'nope' is unknown" in capsys.readouterr().err

    probe, pv_id = make_probe(tmp_path, sessions)
    seed_labels(sessions, probe.head, pv_id, 60, **DRIFT, seed=5)
    rc, doc = _run(capsys, cfg, "--json")
    assert rc == 2 and doc["error"] == "too_few_labels" and (doc["have"], doc["needed"]) == (60, 100), doc
    assert "has 60 labelled scored samples" in doc["message"] and "needs at least 100" in doc["message"]
    rc, out = _run(capsys, cfg, "--since", (T0 + timedelta(seconds=30)).isoformat())
    assert rc == 2 and "has 30 labelled scored samples since" in out, out
    rc, out = _run(capsys, cfg, "--max-labels", "50")
    assert rc == 2 and "below recalibration.min_labels=100" in out, out
    assert set(_versions(sessions)) == {probe.meta.version}  # nothing written by a refusal


def test_broken_ranking_says_retrain_and_writes_nothing_unless_forced(db_url, sessions, tmp_path, capsys):
    probe, pv_id = make_probe(tmp_path, sessions)
    seed_labels(sessions, probe.head, pv_id, 200, slope=0.0, shift=0.4, seed=6)  # outcomes ignore the probe
    cfg = config_file(tmp_path, db_url)
    rc, out = _run(capsys, cfg)
    assert rc == 3, out
    assert "ranking broke" in out and "retrain" in out and "nothing written" in out, out
    assert set(_versions(sessions)) == {probe.meta.version}
    assert not [p for p in (tmp_path / "probes").iterdir() if p.name != "v1"]

    rc, doc = _run(capsys, cfg, "--json", "--force")
    assert rc == 0 and doc["advice"]["action"] == "retrain"
    assert load_artifact(doc["new_probe"]["path"]).meta.extra["recalibration"]["forced"] is True


def test_a_probe_pinned_in_config_is_not_activated(db_url, sessions, tmp_path, capsys):
    probe, pv_id = make_probe(tmp_path, sessions)
    seed_labels(sessions, probe.head, pv_id, 120, **DRIFT, seed=7)
    cfg = config_file(tmp_path, db_url, f"models:\n  {MODEL}:\n    path: {tmp_path}\n    probe: {probe.path}\n")
    rc, doc = _run(capsys, cfg, "--json", "--activate", "--out", str(tmp_path / "recal"))
    assert rc == 0, doc
    assert doc["status"] == "registered" and "pins models.m.probe" in doc["note"]
    assert (tmp_path / "recal" / "head.onnx").is_file()
    assert _versions(sessions)[probe.meta.version] is True


def test_the_new_version_starts_from_a_fresh_reference(db_url, sessions, engine, tmp_path, capsys):
    from monitor.calibration.reference import ensure_default_reference, set_reference
    from monitor.config import load_config
    from monitor.detect import run_detect

    probe, pv_id = make_probe(tmp_path, sessions)
    seed_labels(sessions, probe.head, pv_id, 150, slope=1.0, shift=0.0, seed=8, prefix="ref")
    cfg = config_file(tmp_path, db_url, calibration="  reference_n: 100\n  min_labels: 50\n")
    settings = load_config(cfg)
    with sessions() as s:
        set_reference(s, settings, MODEL, T0, T0 + timedelta(seconds=150))
        s.commit()
    seed_labels(sessions, probe.head, pv_id, 200, **DRIFT, seed=9, start=T0 + timedelta(hours=1), prefix="drift")
    rc, doc = _run(capsys, cfg, "--json", "--activate")
    assert rc == 0, doc
    assert doc["reference"]["what"].startswith("pinned reference")  # ranking judged against the pinned one
    new_id = doc["new_probe"]["id"]
    # traffic after the switch is scored by the new version (as the daemon's reloaded scorer does)
    with sessions() as s:
        activated = s.get(ProbeVersion, new_id).activated_at
    new = load_artifact(doc["new_probe"]["path"])
    seed_labels(sessions, new.head, new_id, 60, **DRIFT, seed=10, start=activated + timedelta(seconds=1), prefix="after")
    run_detect(sessions, settings)
    with sessions() as s:
        pv = s.get(ProbeVersion, new_id)
        ref = ensure_default_reference(s, settings, pv)
        assert ref is not None and not ref.pinned and ref.probe_version_id == new_id
        assert ref.stats["human"]["n"] == 60 and not ref.stats["human"]["complete"]  # only its own evidence
        assert ref.window_start >= activated
        old_refs = list(s.scalars(select(Reference).where(Reference.probe_version_id == pv_id)))
        assert len(old_refs) == 1 and old_refs[0].pinned  # the old version's reference is left alone
        states = list(s.scalars(select(DetectorState).where(DetectorState.probe_version_id == new_id)))
        assert states and all(not (st.state or {}).get("detector") for st in states if st.detector.startswith("cusum"))
