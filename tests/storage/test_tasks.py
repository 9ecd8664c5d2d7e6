"""A sample's task: explicit wins, else the first configured pattern (prompt or route), else none;
bad patterns are refused at config load, naming them; every ingest path stores it (real databases)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from monitor.config import ConfigError, Settings, load_config
from storage.db import session_factory
from storage.jsonl import parse_sample_line
from storage.models import Sample
from storage.records import SampleRecord
from storage.repo_samples import ingest_isolated, ingest_samples
from storage.tasks import TaskRules

PATTERNS = [
    {"name": "yesno", "prompt_regex": r"^(is|are|does|do) "},
    {"name": "describe", "prompt_regex": r"describe|what do you see"},
    {"name": "caption", "route_regex": r"^/v1/caption"},
]


def _rules() -> TaskRules:
    return Settings(collectors={"tasks": PATTERNS}).task_rules()


def test_patterns_pick_the_first_match_and_explicit_wins():
    rules = _rules()
    assert rules.task_of("Is there a red circle?", "/v1/chat/completions") == "yesno"
    assert rules.task_of("Please DESCRIBE the image.", None) == "describe"
    # order matters: a yes/no question that also says "describe" is the first rule's
    assert rules.task_of("Is it easy to describe?", None) == "yesno"
    assert rules.task_of("Count the shapes.", "/v1/caption/batch") == "caption"
    assert rules.task_of("Count the shapes.", "/v1/chat/completions") is None
    assert rules.task_of("Is there a star?", None, explicit="count") == "count"
    assert TaskRules().task_of("Is there a star?", None) is None


def test_a_rule_with_both_regexes_needs_both():
    rules = TaskRules.from_config([{"name": "vqa", "prompt_regex": "colour", "route_regex": "/vqa"}])
    assert rules.task_of("what colour?", "/vqa") == "vqa"
    assert rules.task_of("what colour?", "/chat") is None
    assert rules.task_of("what shape?", "/vqa") is None


def test_bad_patterns_are_refused_at_config_load_naming_them(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("collectors:\n  tasks:\n    - name: yesno\n      prompt_regex: '^(is|are '\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    msg = str(e.value)
    assert "collectors.tasks" in msg and "'^(is|are '" in msg and "not a valid regular expression" in msg
    for bad, words in (({"name": "x"}, "give prompt_regex, route_regex or both"),
                       ({"name": "a@b", "prompt_regex": "x"}, "'a@b' must be 1-64 letters"),
                       ({"name": "r", "route_regex": "[/v1"}, "route_regex (r) '[/v1'")):
        cfg.write_text("collectors:\n  tasks:\n" + "".join(
            f"    {'-' if i == 0 else ' '} {k}: {json.dumps(v)}\n" for i, (k, v) in enumerate(bad.items())))
        with pytest.raises(ConfigError, match="collectors") as e:
            load_config(cfg)
        assert words in str(e.value), str(e.value)
    cfg.write_text("collectors:\n  tasks:\n    - {name: a, prompt_regex: x}\n    - {name: a, prompt_regex: y}\n")
    with pytest.raises(ConfigError, match="more than once"):
        load_config(cfg)


def _tasks(engine) -> dict[str, str | None]:
    with session_factory(engine)() as s:
        return dict(s.execute(select(Sample.id, Sample.task)).all())


def test_ingest_stores_the_task(engine):
    recs = [
        SampleRecord(id="a", model="m", prompt="Is there a star?", answer="yes"),
        SampleRecord(id="b", model="m", prompt="Describe the image.", answer="a star"),
        SampleRecord(id="c", model="m", prompt="How many?", answer="2", route="/v1/caption"),
        SampleRecord(id="d", model="m", prompt="How many?", answer="2"),
        SampleRecord(id="e", model="m", prompt="Is there a star?", answer="yes", task="count"),  # explicit wins
    ]
    res = ingest_isolated(session_factory(engine), recs, tasks=_rules())
    assert sorted(res.inserted) == ["a", "b", "c", "d", "e"] and not res.rejected
    assert _tasks(engine) == {"a": "yesno", "b": "describe", "c": "caption", "d": None, "e": "count"}
    # no patterns: only explicit tasks
    with session_factory(engine).begin() as s:
        ingest_samples(s, [SampleRecord(id="f", model="m", prompt="Is it?", answer="no"),
                           SampleRecord(id="g", model="m", prompt="Is it?", answer="no", task="yesno")])
    got = _tasks(engine)
    assert got["f"] is None and got["g"] == "yesno"


def test_a_bad_explicit_task_is_rejected_with_its_reason(engine):
    res = ingest_isolated(session_factory(engine), [SampleRecord(id="x", model="m", prompt="p", answer="a",
                                                                 task="no spaces")])
    assert not res.inserted and "field 'task'" in res.rejected[0].reason


def test_samples_file_line_task_wins_over_patterns(engine, tmp_path, make_png):
    import base64

    img = "data:image/png;base64," + base64.b64encode(make_png()).decode()
    lines = [{"id": 1, "ts": "2026-01-01T00:00:00Z", "model": "m", "image": img, "prompt": "Describe it.",
              "answer": "x", "task": "yesno"},
             {"id": 2, "ts": "2026-01-01T00:00:01Z", "model": "m", "image": img, "prompt": "Describe it.", "answer": "x"}]
    recs = [parse_sample_line(json.dumps(d), tmp_path, 10_000_000) for d in lines]
    assert recs[0].task == "yesno" and recs[1].task is None and "task" not in (recs[0].meta or {})
    ingest_isolated(session_factory(engine), recs, tasks=_rules())
    assert _tasks(engine) == {"1": "yesno", "2": "describe"}


def test_collected_samples_keep_their_task_through_the_spool():
    from datetime import datetime, timezone

    from collectors.sample import CollectedSample
    from collectors.shipper import to_record

    smp = CollectedSample(id="t1", source="tailer", ts=datetime(2026, 1, 1, tzinfo=timezone.utc), model="m",
                          route="/v1/chat/completions", prompt="p", answer="a", task="describe")
    back = CollectedSample.from_bytes(smp.to_bytes())
    assert back.task == "describe" and to_record(back).task == "describe"
    plain = CollectedSample(id="t2", source="proxy", ts=smp.ts, model="m", route="/r", prompt="p", answer="a")
    assert b'"task"' not in plain.to_bytes() and to_record(CollectedSample.from_bytes(plain.to_bytes())).task is None


def test_synpope_records_carry_their_task():
    from monitor.synpope.generate import generate

    recs = generate("random", 6, seed=3, task="mix")
    assert all(r["task"] == r["meta"]["task"] for r in recs)
    assert {r["task"] for r in generate("random", 2, seed=3, task="describe")} == {"describe"}
