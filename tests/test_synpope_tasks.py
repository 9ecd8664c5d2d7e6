"""SynPOPE's free-form tasks and their judges: truth from the scene, tolerance, every shift knob."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.synpope import FREEFORM_TASKS, OBJECTS, TASKS, Shift, World, generate, iter_examples, judge
from monitor.synpope.tasks import MIX, TASK_TEMPLATES

N = 300


@pytest.mark.parametrize(
    ("task", "answer", "truth", "correct"),
    [
        ("yesno", "Yes, there is one.", "yes", True),
        ("yesno", "no", "yes", False),
        ("describe", "A blue star, and a red circle.", "red circle and blue star", True),
        ("describe", "red circles and blue stars", "red circle and blue star", True),
        ("describe", "red circle", "red circle and blue star", False),
        ("describe", "red circle, blue star and green square", "red circle and blue star", False),
        ("describe", "I cannot tell.", "red circle", False),
        ("count", "There are two objects.", "2", True),
        ("count", "2", "2", True),
        ("count", "three", "2", False),
        ("count", "Nothing to count", "1", False),
        ("attribute", "The star is Blue.", "blue", True),
        ("attribute", "blue or red", "blue", False),
        ("attribute", "it is a star", "blue", False),
        ("list", "Squares and circles.", "circle and square", True),
        ("list", "the circle", "circle and square", False),
        ("list", "None.", "none", True),
        ("list", "There are none", "circle", False),
        ("list", "a star", "none", False),
    ],
)
def test_judges_read_answers_as_a_reader_would(task: str, answer: str, truth: str, correct: bool):
    assert judge(task, answer, truth).correct is correct


def test_describe_judge_names_hallucinated_and_omitted_objects():
    v = judge("describe", "a red circle and a green square.", "red circle and blue star")
    assert (v.correct, v.hallucinated, v.omitted) == (False, ("green square",), ("blue star",))
    assert v.parsed == "red circle and green square"


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="unknown SynPOPE task 'caption'"):
        judge("caption", "x", "y")
    with pytest.raises(ValueError, match="unknown SynPOPE task 'caption'"):
        list(iter_examples("random", 1, seed=0, task="caption"))


@given(st.lists(st.sampled_from(OBJECTS), min_size=1, max_size=3, unique=True), st.randoms(use_true_random=False),
       st.sampled_from([" and ", ", ", " , and ", " & "]), st.booleans())
def test_describe_judge_tolerates_order_joiners_plurals_and_punctuation(objs, rnd, joiner, dot):
    truth = " and ".join(objs)
    shuffled = list(objs)
    rnd.shuffle(shuffled)
    words = [("a " + o) if rnd.random() < 0.5 else (o + ("es" if o.endswith("cross") else "s")) for o in shuffled]
    answer = joiner.join(words).capitalize() + ("." if dot else "")
    assert judge("describe", answer, truth).correct, answer


@pytest.mark.parametrize("task", FREEFORM_TASKS)
def test_truth_follows_the_scene(task: str):
    exs = list(iter_examples("random", N, seed=3, task=task))
    assert {e.meta["task"] for e in exs} == {task}
    for e in exs:
        objs = e.meta["objects"]
        assert judge(task, e.truth, e.truth).correct
        if task == "describe":
            assert sorted(judge(task, e.truth, e.truth).parsed.split(" and ")) == sorted(objs)
        elif task == "count":
            assert e.truth == str(len(objs))
        elif task == "attribute":
            assert f"{e.truth} {e.meta['asked']}" in objs
            assert sum(o.endswith(" " + e.meta["asked"]) for o in objs) == 1  # the question has one answer
        else:
            shapes = [o.split()[1] for o in objs if o.startswith(e.meta["asked"] + " ")]
            assert e.truth == (" and ".join(shapes) or "none")
    if task == "list":  # both kinds of question occur: present and absent colours
        assert 0.1 < sum(e.truth == "none" for e in exs) / N < 0.5
    if task == "describe":  # CHAIR's split needs both kinds of scene
        assert 0.1 < sum(e.meta["partner_absent"] for e in exs) / N < 0.9


def test_mix_draws_every_task_near_its_share():
    got = Counter(e.meta["task"] for e in iter_examples("random", 2000, seed=4, task="mix"))
    assert set(got) == set(TASKS)
    for task, share in MIX.items():
        assert abs(got[task] / 2000 - share) < 0.04, (task, got)


def test_tasks_training_stream_teaches_every_task_with_a_caption_prior():
    """The fixtures' "tasks" phase: every task near its MIX share, yes/no from the prior mix, and
    captions that name an absent partner on partner-absent scenes only, near ``caption_prior``."""
    from monitor.synpope import PriorRecipe, training_examples

    stream = training_examples("tasks", seed=3)
    exs = [next(stream) for _ in range(3000)]
    task_of = {"caption": "describe", "count": "count", "attribute": "attribute", "list": "list"}
    got = Counter(task_of.get(e.kind, "yesno") for e in exs)
    for task, share in MIX.items():
        assert abs(got[task] / len(exs) - share) < 0.03, (task, got)
    assert any(e.kind == "prior" for e in exs)  # yes/no questions come from the prior-bearing mix
    world = World(pair_prob=PriorRecipe().pair_prob)
    caps = [e for e in exs if e.kind == "caption"]
    for e in caps:
        named = e.truth.split(" and ")
        extra = [o for o in named if o not in e.objects]
        assert set(e.objects) <= set(named) and len(extra) <= 1, e.truth
        if extra:  # the one added object is the absent partner of a present one
            assert e.meta["partner_absent"] and extra[0] in {world.partner(o) for o in e.objects}
    absent = [e for e in caps if e.meta["partner_absent"]]
    hallucinated = sum(e.truth != " and ".join(e.objects) for e in absent) / len(absent)
    assert abs(hallucinated - PriorRecipe().caption_prior) < 0.06, hallucinated
    for e in (e for e in exs if e.kind in ("count", "attribute", "list")):
        assert judge(e.kind, e.truth, e.truth).correct  # the free-form tasks are taught honestly


def test_yesno_stream_is_unchanged_by_tasks():
    default = [(e.prompt, e.truth, e.objects) for e in iter_examples("adversarial", 50, seed=9)]
    explicit = [(e.prompt, e.truth, e.objects) for e in iter_examples("adversarial", 50, seed=9, task="yesno")]
    assert default == explicit
    assert all(e.prompt.startswith("Is there a ") for e in iter_examples("adversarial", 50, seed=9))


@pytest.mark.parametrize("task", FREEFORM_TASKS)
def test_every_shift_knob_works_for_every_task(task: str):
    def run(**knobs):
        return list(iter_examples("random", 40, seed=5, shift=Shift(**knobs), task=task))

    ref = run()
    px = lambda exs: np.stack([np.asarray(e.image, dtype=np.float32) for e in exs])  # noqa: E731
    for knobs in ({"noise": 0.1}, {"blur": 1.5}, {"contrast": 0.4}, {"background": "dark"}, {"concept": "colours"}):
        shifted = run(**knobs)
        assert [e.truth for e in shifted] == [e.truth for e in ref], knobs  # same scenes and truths
        assert np.abs(px(shifted) - px(ref)).mean() > 1.0, knobs  # different pixels
    for template in ("contain", "see", "present"):
        shifted = run(template=template)
        assert [e.truth for e in shifted] == [e.truth for e in ref]
        assert all(a.prompt != b.prompt for a, b in zip(shifted, ref, strict=True))
        assert {e.prompt for e in shifted} <= {TASK_TEMPLATES[task][template].format(shape=e.meta["asked"], colour=e.meta["asked"]) for e in shifted}
    # a new co-occurrence matrix changes which objects appear together
    pairs = World(pairing_seed=5).pairs
    cooc = run(cooc_seed=5)
    together = [tuple(sorted(e.objects[:2])) for e in cooc if len(e.objects) >= 2]
    assert sum(p in pairs for p in together) / len(together) > 0.5
    # label noise makes the truth wrong by the task's own judge, and keeps the clean one
    noisy = run(label_noise=1.0)
    assert all(not judge(task, e.truth, e.meta["clean_truth"]).correct for e in noisy)
    assert [e.meta["clean_truth"] for e in noisy] == [e.truth for e in ref]


def test_samples_file_per_task(tmp_path: Path):
    recs = generate("random", 12, seed=0, out=tmp_path, task="describe")
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert lines == recs
    assert all(r["id"].startswith("synpope-describe-random-0-") and r["meta"]["task"] == "describe" for r in recs)
    assert all(r["answer"] == r["truth"] and (tmp_path / r["image"]).is_file() for r in recs)


def test_cli_generate_selects_the_task(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "synpope", "generate", "--task", "mix", "--n", "30", "--out", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["task"] == "mix" and summary["n"] == 30 and sum(summary["tasks"].values()) == 30
    recs = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert Counter(r["meta"]["task"] for r in recs) == Counter(summary["tasks"])
    bad = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "synpope", "generate", "--task", "caption", "--n", "3", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert bad.returncode == 2 and "caption" in bad.stderr
