"""The README's main job: ``vlmwatch demo`` end to end, with its closing summary as JSON.

This runs the real thing (fixture VLM server, proxy, daemon + API as processes, the openai
client, SynPOPE traffic with a shift) with the default plan, so it also checks the demo's
promise: mixed traffic (yes/no questions and captions labelled by their judges) whose free-form
answers get K-sample spot checks, counted in the summary; a shift that makes captions name absent
objects; the drift alert fires after the shift and no alert fires before it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_summary_json(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "demo", "--dir", str(tmp_path / "demo"), "--summary-json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=840, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    took = time.monotonic() - t0
    assert out.exists(), f"no summary written (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    s = json.loads(out.read_text())
    # the contract: shift_at (sample index) and alerts with rule, fired_at_sample, state
    assert isinstance(s["shift_at"], int) and 0 < s["shift_at"] < s["sent"]
    assert isinstance(s["alerts"], list)
    for a in s["alerts"]:
        assert isinstance(a["rule"], str) and a["rule"]
        assert isinstance(a["fired_at_sample"], int) and 0 <= a["fired_at_sample"] <= s["sent"]
        assert a["state"] in ("firing", "resolved")
    # the pipeline kept up: everything sent was stored and scored, labels arrived
    c = s["counts"]
    assert s["errors"] == 0
    ref = s["reference_samples"]
    assert c["samples"] == s["sent"] + ref and c["scored"] == c["samples"]
    assert c["with_answer_prob"] == c["scored"]  # logprobs captured by the proxy (and the reference's) reached the scores
    assert 0.05 * s["sent"] < c["labels"] - ref < 0.15 * s["sent"]
    assert c["windows"] > 0 and c["spot_checked"] > 0
    # mixed traffic: ~60% yes/no, ~40% captions, each answer labelled by its task's judge
    t = s["tasks"]
    assert set(t) == {"yesno", "describe"}, t
    assert 0.5 < t["yesno"]["share"] < 0.7 and 0.3 < t["describe"]["share"] < 0.5
    for task in t.values():
        for period in ("before", "after"):
            assert task[period]["answered"] > 100 and task[period]["labelled"] > 10
    # the K-sample spot checks ran on the free-form answers (multi-token), and the summary counts them
    assert c["spot_checked_k_sample"] > 0 and t["describe"]["spot_checked_k_sample"] > 0
    assert c["spot_checked_k_sample"] <= c["spot_checked"]
    # yes/no answers are one token (the exact path) but for the multi-token answers the shift brings
    assert t["yesno"]["spot_checked_k_sample"] <= 0.25 * t["yesno"]["spot_checked"]
    assert t["yesno"]["spot_checked_k_sample"] < t["describe"]["spot_checked_k_sample"]
    assert f"{c['spot_checked_k_sample']} K-sample" in r.stdout
    # the shift raises caption hallucinations (captions naming an absent object)
    d = t["describe"]
    assert d["after"]["chair_s"] > d["before"]["chair_s"] + 0.2, d
    assert d["after"]["accuracy"] < d["before"]["accuracy"]
    # the demo's promise, and its time limit
    before = [a for a in s["alerts"] if a["fired_at_sample"] < s["shift_at"]]
    assert not before, f"alerts before the shift: {before}"
    drift = [a for a in s["alerts"] if a["rule"] == "probe_disagreement_drift"]
    assert drift and drift[0]["fired_at_sample"] >= s["shift_at"], s["alerts"]
    assert s["verdict"]["ok"] is True and r.returncode == 0
    report = Path(s["report_dir"])
    for f in ("score_drift.html", "reliability.png", "timelines.png", "summary.json", "tasks.html"):
        assert (report / f).stat().st_size > 1000
    by_task = json.loads((report / "summary.json").read_text())["by_task"]  # the report's per-task figures
    assert by_task["describe"]["after"]["ece"] is not None and by_task["yesno"]["before"]["labelled"] > 100
    assert took < 600 + 60, f"the demo took {took:.0f}s"


def _pids_mentioning(text: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_ctrl_c_stops_everything(tmp_path: Path) -> None:
    import signal

    demo_dir = tmp_path / "demo"
    log = open(tmp_path / "demo.out", "w+")
    p = subprocess.Popen([sys.executable, "-m", "monitor.cli", "demo", "--dir", str(demo_dir), "--duration", "5m"],
                         cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        deadline = time.monotonic() + 480
        while "replaying" not in (tmp_path / "demo.out").read_text():
            assert p.poll() is None, (tmp_path / "demo.out").read_text()
            assert time.monotonic() < deadline, "the demo never started its traffic"
            time.sleep(1)
        time.sleep(5)
        children = _pids_mentioning(str(demo_dir / "vlmwatch.yaml"))
        assert len(children) >= 3  # server, daemon, proxy (+ the proxy's helpers)
        p.send_signal(signal.SIGINT)
        assert p.wait(90) == 130
    finally:
        if p.poll() is None:
            p.kill()
    time.sleep(1)
    assert _pids_mentioning(str(demo_dir / "vlmwatch.yaml")) == []
    assert "interrupted" in (tmp_path / "demo.out").read_text()
