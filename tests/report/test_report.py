"""The calibration drift report over a real database with an injected calibration shift."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.report import build_report, parse_since
from storage.db import session_factory
from storage.models import Alert, CalibrationWindow, Label, ProbeVersion, Sample, Score

N, SHIFT = 1200, 800
T0 = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)


def _populate(s: Session) -> None:
    """Probe well calibrated for SHIFT samples, then over-confident (accuracy drops, scores don't)."""
    from monitor.calibration.metrics import window_metrics

    rng = np.random.default_rng(7)
    pv = ProbeVersion(model="m", version="v1", path="-", model_fingerprint="0" * 64, layer=2, pooling="last", active=True)
    s.add(pv)
    s.flush()
    p = rng.beta(4, 1.6, N)
    truth = np.where(np.arange(N) < SHIFT, rng.random(N) < p, rng.random(N) < p * 0.55)
    s.add_all([Sample(id=f"r{i}", model="m", ts=T0 + timedelta(seconds=30 * i), prompt="q", answer="yes",
                      status="scored") for i in range(N)])
    s.flush()
    for i in range(N):
        s.add(Score(sample_id=f"r{i}", probe_version_id=pv.id, p_correct=float(p[i]) if i < SHIFT else float(p[i] * 0.9 + 0.05),
                    answer_prob=float(rng.random())))
        if i % 2 == 0:
            s.add(Label(sample_id=f"r{i}", correct=bool(truth[i]), source="ground_truth"))
    for e in range(300, N + 1, 75):
        idx = np.arange(max(0, e - 300), e, 2)
        m = window_metrics(p[idx], truth[idx].astype(float), bootstrap=100)
        s.add(CalibrationWindow(model="m", probe_version_id=pv.id, kind="rolling", source="human",
                                window_start=T0 + timedelta(seconds=30 * int(idx[0])),
                                window_end=T0 + timedelta(seconds=30 * (e - 1)), n=len(idx), partial=len(idx) < 100,
                                auroc=m["auroc"], ece=m["ece_width"], brier=m["brier"], agreement=m["agreement"],
                                mean_score=m["mean_score"], metrics=m))
    s.add(Alert(id="a1", fingerprint="f", rule="probe_disagreement_drift", state="firing", severity="critical",
                model="m", started_at=T0 + timedelta(seconds=30 * (SHIFT + 150))))
    s.commit()


def test_report_shows_the_shift(engine, tmp_path: Path) -> None:
    sessions = session_factory(engine)
    with sessions() as s:
        _populate(s)
    settings = Settings(storage={"url": str(engine.url)}, calibration={"reference_n": 400, "rolling_n": 300})
    now = T0 + timedelta(seconds=30 * N + 60)
    summary = build_report(sessions, settings, since="1d", out_dir=tmp_path / "r", now=now,
                           shift_at=T0 + timedelta(seconds=30 * SHIFT))
    out = tmp_path / "r"
    for f in ("score_drift.html", "reliability.png", "timelines.png", "summary.json"):
        assert (out / f).stat().st_size > 1000, f
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["samples"] == N and summary["scored"] == N and summary["labelled"] == N // 2
    html = (out / "score_drift.html").read_text()
    assert "Drift Summary" in html and "p_correct" in html  # Evidently's drift widgets for the score columns
    assert summary["score_drift"]["columns"]["p_correct"]["value"] is not None
    # reliability: the windows after the shift are clearly worse calibrated than those before
    rel = summary["reliability_windows"]
    assert len(rel) >= 4
    cut = (T0 + timedelta(seconds=30 * SHIFT)).isoformat()
    before = [w["ece"] for w in rel if w["window_end"] <= cut]
    after = [w["ece"] for w in rel if w["window_start"] >= cut]
    assert before and after and min(after) > max(before) + 0.1, rel
    assert summary["alerts"][0]["rule"] == "probe_disagreement_drift"
    assert summary["timeline_series"]["auroc:m:human"] >= 8
    latest = summary["calibration_latest"]["m/rolling/human"]
    assert latest["agreement"] < 0.7


def test_empty_period_still_writes_a_report(engine, tmp_path: Path) -> None:
    settings = Settings(storage={"url": str(engine.url)})
    summary = build_report(session_factory(engine), settings, since="2h", out_dir=tmp_path)
    assert summary["scored"] == 0 and summary["score_drift"]["skipped"] is True
    assert (tmp_path / "timelines.png").exists() and (tmp_path / "reliability.png").exists()


def test_since_parsing_and_cli_errors(tmp_path: Path) -> None:
    assert parse_since("7d") == timedelta(days=7)
    assert parse_since("90s") == timedelta(seconds=90)
    assert parse_since("1.5h") == timedelta(hours=1.5)
    with pytest.raises(ValueError, match="--since"):
        parse_since("week")
    r = subprocess.run([sys.executable, "-m", "monitor.cli", "report", "--since", "soon", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--since" in r.stderr
