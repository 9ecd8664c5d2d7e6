"""SynPOPE tasks: yes/no questions and four free-form kinds, each with prompts and a canonical truth.

- ``yesno``: "Is there a red circle in the image?" -> "yes" (POPE; ``split`` picks the negatives);
- ``describe``: "Describe the image." -> "red circle and blue star" (left to right);
- ``count``: "How many objects are there?" -> "2";
- ``attribute``: "What colour is the star?" (a shape the scene holds once) -> "blue";
- ``list``: "Which shapes are red?" (a present colour with p 0.75, else an absent one) ->
  "circle and square" or "none".

Every task phrases its prompt in each of the four template styles of ``world.TEMPLATES``
(``pope`` the reference, ``contain``, ``see``, ``present``), so the prompt-template knob shifts
every task; the image knobs, the co-occurrence seed and the concept remap act through the scene
and the renderer as for yes/no; ``label_noise`` perturbs the truth (a flipped yes/no, a swapped
object, a count off by one, the shape's other colour, a list emptied or given a wrong shape).
``split`` only changes yes/no questions (how their negatives are drawn).

Correctness is decided by :mod:`monitor.synpope.judges` from the canonical truth.
"""

from __future__ import annotations

import random
from collections import Counter

from monitor.synpope.scenes import Example, _render, honest_example, sample_scene
from monitor.synpope.shift import Shift
from monitor.synpope.world import CAPTION_PROMPT, COLOURS, TEMPLATES, World

__all__ = [
    "TASKS",
    "FREEFORM_TASKS",
    "MIX",
    "TASK_TEMPLATES",
    "task_prompt",
    "task_example",
    "freeform_example",
    "noisy_truth",
]

FREEFORM_TASKS = ("describe", "count", "attribute", "list")
TASKS = ("yesno", *FREEFORM_TASKS)
# "mix": the task of each example is drawn with these shares (a plausible production blend)
MIX: dict[str, float] = {"yesno": 0.4, "describe": 0.25, "count": 0.1, "attribute": 0.15, "list": 0.1}

TASK_TEMPLATES: dict[str, dict[str, str]] = {
    "yesno": TEMPLATES,
    "describe": {
        "pope": CAPTION_PROMPT,
        "contain": "What does the image contain?",
        "see": "What do you see in this picture?",
        "present": "Which objects are present here?",
    },
    "count": {
        "pope": "How many objects are there?",
        "contain": "How many objects does the image contain?",
        "see": "How many objects do you see in this picture?",
        "present": "How many objects are present here?",
    },
    "attribute": {
        "pope": "What colour is the {shape}?",
        "contain": "What colour is the {shape} the image contains?",
        "see": "What colour is the {shape} you see in this picture?",
        "present": "Which colour is the {shape} present here?",
    },
    "list": {
        "pope": "Which shapes are {colour}?",
        "contain": "Which {colour} shapes does the image contain?",
        "see": "Which {colour} shapes do you see in this picture?",
        "present": "Which {colour} shapes are present here?",
    },
}
assert all(set(t) == set(TEMPLATES) for t in TASK_TEMPLATES.values()), "every task phrases every template style"

_LIST_PRESENT_COLOUR = 0.75


def task_prompt(task: str, template: str, **slots: str) -> str:
    """The prompt of ``task`` in template style ``template`` (``object``/``shape``/``colour`` slots)."""
    if task not in TASK_TEMPLATES:
        raise ValueError(f"unknown SynPOPE task {task!r}; expected one of {', '.join(TASKS)}")
    return TASK_TEMPLATES[task][template].format(**slots)


def _unique_shapes(objects: list[str]) -> list[str]:
    counts = Counter(o.split(" ")[1] for o in objects)
    return [o.split(" ")[1] for o in objects if counts[o.split(" ")[1]] == 1]


def freeform_example(task: str, world: World, shift: Shift, rng: random.Random) -> Example:
    """One honest example of free-form ``task`` (its truth is what the scene holds)."""
    scene = sample_scene(world, rng)
    while task == "attribute" and not _unique_shapes(scene):  # two objects of one shape: ask another scene
        scene = sample_scene(world, rng)
    image, ordered = _render(scene, shift, rng)
    partner_absent = any(world.partner(o) not in scene for o in scene)
    meta = {"partner_absent": partner_absent}
    if task == "describe":
        truth, prompt, asked = " and ".join(ordered), task_prompt(task, shift.template), None
    elif task == "count":
        truth, prompt, asked = str(len(ordered)), task_prompt(task, shift.template), None
    elif task == "attribute":
        shape = rng.choice(_unique_shapes(ordered))
        truth = next(o.split(" ")[0] for o in ordered if o.endswith(" " + shape))
        prompt, asked = task_prompt(task, shift.template, shape=shape), shape
    else:  # list
        present = list(dict.fromkeys(o.split(" ")[0] for o in ordered))
        absent = [c for c in COLOURS if c not in present]
        colour = rng.choice(present) if rng.random() < _LIST_PRESENT_COLOUR else rng.choice(absent)
        shapes = [o.split(" ")[1] for o in ordered if o.startswith(colour + " ")]
        truth = " and ".join(shapes) if shapes else "none"
        prompt, asked = task_prompt(task, shift.template, colour=colour), colour
    return Example(image, prompt, truth, ordered, asked, task, meta)


def noisy_truth(task: str, ex: Example, world: World, rng: random.Random) -> str:
    """A wrong truth for a label-noise flip: plausible, never equal to the clean one."""
    if task == "yesno":
        return "no" if ex.truth == "yes" else "yes"
    if task == "describe":
        swap = rng.randrange(len(ex.objects))
        absent = [o for o in world.objects if o not in ex.objects]
        objs = list(ex.objects)
        objs[swap] = rng.choice(absent)
        return " and ".join(objs)
    if task == "count":
        n = int(ex.truth)
        return str(n + 1 if n == 1 or rng.random() < 0.5 else n - 1)
    if task == "attribute":
        return next(o.split(" ")[0] for o in world.objects if o.endswith(" " + ex.asked) and not o.startswith(ex.truth + " "))
    # list
    if ex.truth != "none":
        return "none"
    return rng.choice([o.split(" ")[1] for o in world.objects if o.startswith(f"{ex.asked} ")])


def task_example(task: str, world: World, split: str, shift: Shift, rng: random.Random) -> Example:
    """One honest example of ``task`` (``split`` matters for yes/no only)."""
    if task == "yesno":
        return honest_example(world, split, shift, rng)
    if task not in FREEFORM_TASKS:
        raise ValueError(f"unknown SynPOPE task {task!r}; expected one of {', '.join(TASKS)}")
    return freeform_example(task, world, shift, rng)
