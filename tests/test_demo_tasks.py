"""The demo's task mix without running the demo: the mix parser, the traffic it yields, how a
stored prompt is traced back to its task, and the report's per-task figures."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pandas as pd
import pytest

from monitor.demo.plan import DemoPlan
from monitor.demo.tasks import DEFAULT_MIX, max_tokens_for, parse_mix, task_of_prompt
from monitor.demo.traffic import TrafficStats, demo_shift, requests_for
from monitor.report.tasks import task_figures
from monitor.synpope import TASKS, iter_examples, judge


def test_parse_mix_normalises_and_refuses_bad_input() -> None:
    assert parse_mix("yesno:0.6,describe:0.4") == (("yesno", 0.6), ("describe", 0.4))
    assert parse_mix("yesno:3, describe:1") == (("yesno", 0.75), ("describe", 0.25))
    assert parse_mix("describe") == (("describe", 1.0),)
    with pytest.raises(ValueError, match="unknown task 'caption'.*yesno, describe"):
        parse_mix("yesno:0.5,caption:0.5")
    with pytest.raises(ValueError, match="must be > 0"):
        parse_mix("yesno:0.5,describe:0")
    with pytest.raises(ValueError, match="must be a number"):
        parse_mix("yesno:lots")
    with pytest.raises(ValueError, match="twice"):
        parse_mix("yesno:1,yesno:2")
    with pytest.raises(ValueError, match="no task"):
        parse_mix(" , ")


def test_demo_traffic_mixes_tasks_and_shifts_every_task() -> None:
    plan = DemoPlan(traffic_seconds=100)  # 1000 requests, shift at 500
    reqs = list(requests_for(plan))
    assert [r.index for r in reqs] == list(range(plan.total))
    assert all(r.shifted == (r.index >= plan.shift_at) for r in reqs)
    counts = Counter(r.task for r in reqs)
    assert set(counts) == {"yesno", "describe"} and dict(DEFAULT_MIX) == {"yesno": 0.6, "describe": 0.4}
    assert 0.55 < counts["yesno"] / plan.total < 0.65  # 600 +- 3 sigma (15)
    for half in (reqs[:plan.shift_at], reqs[plan.shift_at:]):  # both periods carry the mix
        assert 0.3 < sum(r.task == "describe" for r in half) / len(half) < 0.5
    for r in reqs:
        assert task_of_prompt(r.prompt) == r.task
        assert judge(r.task, r.truth, r.truth).correct  # truths are well-formed for their judge
    assert all(" and " in r.truth or r.truth.count(" ") == 1 for r in reqs if r.task == "describe")
    assert max_tokens_for("yesno") == 4 and max_tokens_for("describe") >= 16
    # deterministic by seed, different with another seed
    again = list(requests_for(plan))
    assert [(r.task, r.prompt, r.truth) for r in again] == [(r.task, r.prompt, r.truth) for r in reqs]
    other = list(requests_for(replace(plan, seed=1)))
    assert [r.task for r in other] != [r.task for r in reqs]
    # the shift changes the co-occurrence structure of the scenes (what makes captions hallucinate)
    sh = demo_shift(plan)
    assert sh.cooc_seed == plan.shift_cooc_seed != 0 and sh.noise == plan.shift_noise


def test_task_of_prompt_every_template_and_other_text() -> None:
    for task in TASKS:
        for template in ("pope", "contain", "see", "present"):
            from monitor.synpope import Shift

            ex = next(iter_examples("random", 1, seed=3, shift=Shift(template=template), task=task))
            assert task_of_prompt(ex.prompt) == task, (task, ex.prompt)
    assert task_of_prompt("What is the capital of France?") is None
    assert task_of_prompt("Describe the image. Then tell a joke.") is None
    assert task_of_prompt("") is None


def test_traffic_stats_record_caption_hallucinations() -> None:
    st = TrafficStats()
    st.record("describe", False, judge("describe", "red circle and blue star", "red circle and blue star"))
    st.record("describe", True, judge("describe", "red circle and green square", "red circle"))
    st.record("yesno", True, judge("yesno", "no", "yes"))
    b, a = st.by_task["describe"]["before"], st.by_task["describe"]["after"]
    assert (b["answered"], b["correct"], b["hallucinating"], b["named"]) == (1, 1, 0, 2)
    assert (a["answered"], a["correct"], a["hallucinating"], a["named"], a["hallucinated"]) == (1, 0, 1, 2, 1)
    assert st.by_task["yesno"]["after"]["correct"] == 0 and "before" not in st.by_task["yesno"]


def test_task_figures_slice_by_task_and_shift() -> None:
    ts = pd.to_datetime(["2026-01-01T00:00:00Z"] * 4 + ["2026-01-01T01:00:00Z"] * 4, utc=True)
    df = pd.DataFrame({
        "ts": ts,
        "prompt": ["Is there a red circle in the image?", "Describe the image."] * 4,
        "p_correct": [0.9, 0.8, 0.9, 0.8, 0.9, 0.8, 0.9, 0.8],
        "correct": [1.0, 1.0, 1.0, None, 0.0, 0.0, 1.0, None],
        "sc_agreement": [None, 0.7, 1.0, None, None, 0.2, None, 0.3],
        "sc_one_token": [None, False, True, None, None, False, None, False],
    })
    out = task_figures(df, task_of_prompt, shift_at=pd.Timestamp("2026-01-01T00:30:00Z"))
    assert set(out) == {"yesno", "describe"}
    yn, d = out["yesno"], out["describe"]
    assert yn["before"]["labelled"] == 2 and yn["before"]["accuracy"] == 1.0
    assert yn["after"]["accuracy"] == 0.5 and yn["after"]["disagreement"] == 0.5
    assert yn["all"]["spot_checked"] == 1 and yn["all"]["spot_checked_k_sample"] == 0
    assert d["all"]["spot_checked"] == 3 and d["all"]["spot_checked_k_sample"] == 3
    assert d["before"]["labelled"] == 1 and d["after"]["labelled"] == 1 and d["after"]["accuracy"] == 0.0
    assert d["after"]["ece"] == pytest.approx(0.8)
    assert task_figures(df.assign(prompt="hello"), task_of_prompt)["other"]["all"]["scored"] == 8


def test_summary_counts_k_sample_checks_and_shows_tasks() -> None:
    from monitor.demo.progress import format_summary
    from monitor.demo.run import task_summary

    st = TrafficStats()
    for shifted, answer in ((False, "red circle"), (True, "red circle and blue star")):
        for _ in range(3):
            st.record("describe", shifted, judge("describe", answer, "red circle"))
    st.record("yesno", False, judge("yesno", "yes", "yes"))
    report = {"describe": {"all": {"spot_checked": 4, "spot_checked_k_sample": 4},
                           "before": {"mean_score": 0.9, "ece": 0.1, "mean_agreement": 0.8},
                           "after": {"mean_score": 0.85, "ece": 0.85, "mean_agreement": 0.3}},
              "yesno": {"all": {"spot_checked": 2, "spot_checked_k_sample": 0}}}
    tasks = task_summary(st, report)
    d = tasks["describe"]
    assert d["share"] == pytest.approx(6 / 7) and d["spot_checked_k_sample"] == 4
    assert (d["before"]["accuracy"], d["before"]["chair_s"]) == (1.0, 0.0)
    assert (d["after"]["accuracy"], d["after"]["chair_s"], d["after"]["chair_i"]) == (0.0, 1.0, 0.5)
    assert d["after"]["ece"] == 0.85 and tasks["yesno"]["after"]["accuracy"] is None
    summary = {"sent": 7, "shift_at": 4, "accuracy_before": 1.0, "accuracy_after": 0.0, "alerts": [],
               "counts": {"samples": 7, "scored": 7, "with_answer_prob": 7, "spot_checked": 6,
                          "spot_checked_k_sample": 4, "labels": 2, "windows": 1},
               "tasks": tasks, "verdict": {"ok": False, "text": "no drift alert fired after the shift"},
               "report_dir": "r", "dir": "d", "elapsed_seconds": 1.0}
    text = format_summary(summary)
    assert "6  (4 K-sample on free-form answers" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("describe"))
    assert "100% -> 0%" in line and "0% -> 100%" in line and "4 (4), 0.80 -> 0.30" in line
