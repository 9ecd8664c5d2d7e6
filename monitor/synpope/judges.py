"""Judges: is an answer correct, given the canonical truth of its SynPOPE task?

One function per task, used by data generation, ``fixture eval``, the demo's labeller and the
tests, so "correct" means the same everywhere. A judge reads the answer as a reader would and
tolerates harmless variation: case, articles, order, "and" or commas, plurals, trailing
punctuation, number words ("two" = "2"), a restated question ("Yes, there is one.").

Truths are the canonical answers :mod:`monitor.synpope.tasks` writes:

- ``yesno``: ``"yes"`` / ``"no"``;
- ``describe``: the present objects, ``"red circle and blue star"``. Correct iff the set of
  objects the answer names equals the present set; ``hallucinated`` lists objects named but
  absent and ``omitted`` objects present but not named (CHAIR's instance and sentence counts
  come from these);
- ``count``: the number of objects, ``"2"``;
- ``attribute``: the colour of the asked shape, ``"red"``;
- ``list``: the shapes of the asked colour, ``"circle and square"``, or ``"none"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from monitor.spotcheck.answers import normalize_answer
from monitor.synpope.world import COLOURS, SHAPES

__all__ = ["TASK_JUDGES", "Verdict", "answer_key", "judge", "judge_yesno", "judge_describe", "judge_count",
           "judge_attribute", "judge_list", "mentioned_objects"]

_PLURAL = {s: (s + "es" if s.endswith(("s", "x", "ch", "sh")) else s + "s") for s in SHAPES}
_SHAPE_WORD = {**{s: s for s in SHAPES}, **{p: s for s, p in _PLURAL.items()}}
_COLOUR_SET = set(COLOURS)
_NONE_WORDS = {"none", "nothing", "no", "neither", "0"}


@dataclass(frozen=True)
class Verdict:
    """A judge's decision. ``parsed`` is what the judge read the answer as (canonical form)."""

    correct: bool
    parsed: str
    hallucinated: tuple[str, ...] = ()  # named in the answer, absent from the truth
    omitted: tuple[str, ...] = ()  # in the truth, not named in the answer


def _words(text: str) -> list[str]:
    if not isinstance(text, str):
        raise TypeError(f"answer must be a str, got {type(text).__name__}")
    return normalize_answer(text, yes_no_prefix=False).split()


def mentioned_objects(text: str) -> list[str]:
    """Objects ("colour shape") the text names, in order, each once; a colour list shares its
    shape ("red and blue circles" names red circle and blue circle)."""
    words = _words(text)
    found: list[str] = []
    pending: list[str] = []  # colours waiting for their shape
    for w in words:
        if w in _COLOUR_SET:
            pending.append(w)
        elif w in _SHAPE_WORD and pending:
            for c in pending:
                name = f"{c} {_SHAPE_WORD[w]}"
                if name not in found:
                    found.append(name)
            pending = []
        elif w not in ("and", "or"):
            pending = []
    return found


def _shapes(text: str) -> list[str]:
    out: list[str] = []
    for w in _words(text):
        s = _SHAPE_WORD.get(w)
        if s is not None and s not in out:
            out.append(s)
    return out


def _sets(named: list[str], truth: list[str], parsed: str) -> Verdict:
    hallucinated = tuple(o for o in named if o not in truth)
    omitted = tuple(o for o in truth if o not in named)
    return Verdict(not hallucinated and not omitted, parsed, hallucinated, omitted)


def judge_yesno(answer: str, truth: str) -> Verdict:
    parsed = normalize_answer(answer)
    return Verdict(parsed == normalize_answer(truth), parsed)


def judge_describe(answer: str, truth: str) -> Verdict:
    named = mentioned_objects(answer)
    return _sets(named, mentioned_objects(truth), " and ".join(named))


def judge_count(answer: str, truth: str) -> Verdict:
    words = _words(answer)
    numbers = [w for w in words if w.isdigit()]
    if numbers:
        parsed = numbers[0]
    elif words and words[0] in ("no", "none", "nothing"):
        parsed = "0"
    else:
        parsed = ""
    return Verdict(parsed != "" and int(parsed) == int(truth), parsed)


def judge_attribute(answer: str, truth: str) -> Verdict:
    colours = list(dict.fromkeys(w for w in _words(answer) if w in _COLOUR_SET))
    parsed = " and ".join(colours)
    return Verdict(colours == [truth.strip().lower()], parsed, tuple(c for c in colours if c != truth.strip().lower()))


def judge_list(answer: str, truth: str) -> Verdict:
    named = _shapes(answer)
    if not named and set(_words(answer)) & _NONE_WORDS:
        return Verdict(_shapes(truth) == [], "none", (), tuple(_shapes(truth)))
    return _sets(named, _shapes(truth), " and ".join(named) or "")


TASK_JUDGES: dict[str, Callable[[str, str], Verdict]] = {
    "yesno": judge_yesno,
    "describe": judge_describe,
    "count": judge_count,
    "attribute": judge_attribute,
    "list": judge_list,
}


def answer_key(task: str, answer: str) -> str:
    """The group an answer falls in for self-consistency: two answers with one key say the same
    thing by ``task``'s judge (a caption's object set in a fixed order, a count, a colour, a shape
    list); ``yesno`` keys are the normalised answer."""
    if task not in TASK_JUDGES:
        raise ValueError(f"unknown SynPOPE task {task!r}; expected one of {', '.join(TASK_JUDGES)}")
    if task == "yesno":
        return normalize_answer(answer)
    parsed = TASK_JUDGES[task](answer, "0" if task == "count" else "").parsed
    return " and ".join(sorted(parsed.split(" and "))) if task in ("describe", "list") else parsed


def judge(task: str, answer: str, truth: str) -> Verdict:
    """The verdict of ``task``'s judge on ``answer``; a clear error for an unknown task."""
    try:
        fn = TASK_JUDGES[task]
    except KeyError:
        raise ValueError(f"unknown SynPOPE task {task!r}; expected one of {', '.join(TASK_JUDGES)}") from None
    return fn(answer, truth)

