"""Scenes and questions: honest POPE-style data and the prior-bearing training data.

Honest data (what evaluation always uses): a scene holds an anchor drawn by popularity, its
partner with ``world.pair_prob`` and one more object with ``world.extra_prob``. Questions are
"yes" with ``shift.yes_rate``; negatives are drawn as POPE does:

- random: any absent object;
- popular: one of the three most popular absent objects;
- adversarial: the absent object that co-occurs most with the present ones (ties at random).

Prior-bearing data (for fine-tuning a fixture that hallucinates like a real VLM): scenes of 1–2
objects; 30% of questions ask about the absent partner of a present object and are labelled
"yes" with probability 0.8 — a language prior that overrides the image; positives are thinned
so that "yes" stays about 50% overall, and 30% of the honest negatives share a colour or a shape
with a present object.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image

from monitor.synpope.render import place_objects, render_scene
from monitor.synpope.shift import Shift
from monitor.synpope.world import CAPTION_PROMPT, TEMPLATES, World

__all__ = [
    "SPLITS",
    "Example",
    "PriorRecipe",
    "sample_scene",
    "honest_example",
    "prior_example",
    "caption_example",
    "prior_caption_example",
    "plain_example",
    "question",
]

SPLITS = ("random", "popular", "adversarial")


@dataclass
class Example:
    image: Image.Image
    prompt: str
    truth: str  # "yes" / "no" for questions; the caption for captioning examples
    objects: list[str]  # present objects, left to right
    asked: str | None = None  # the object the question names
    kind: str = "positive"  # positive | random | popular | adversarial | hard | prior | caption
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PriorRecipe:
    """The hallucination-structure fine-tune mix (numbers from the issue's recipe)."""

    pair_prob: float = 0.7  # anchor's partner added to the scene
    prior_share: float = 0.3  # questions about the absent partner of a present object
    prior_yes: float = 0.8  # ... labelled "yes" with this probability
    hard_share: float = 0.3  # honest negatives sharing a colour or shape with a present object
    yes_total: float = 0.5  # positives are thinned to keep "yes" at this share overall
    caption_prior: float = 0.35  # "tasks" mix: a caption names an absent partner with this probability


def question(obj: str, template: str = "pope") -> str:
    return TEMPLATES[template].format(object=obj)


def sample_scene(world: World, rng: random.Random, max_objects: int = 3) -> list[str]:
    """Objects of one scene: anchor by popularity, its partner, maybe one more."""
    objs = world.by_popularity()
    anchor = rng.choices(objs, weights=[world.popularity[o] for o in objs])[0]
    scene = [anchor]
    if rng.random() < world.pair_prob and len(scene) < max_objects:
        scene.append(world.partner(anchor))
    if rng.random() < world.extra_prob and len(scene) < max_objects:
        rest = [o for o in objs if o not in scene]
        scene.append(rng.choices(rest, weights=[world.popularity[o] for o in rest])[0])
    return scene


def _negative(world: World, present: list[str], split: str, rng: random.Random) -> str:
    absent = [o for o in world.objects if o not in present]
    if split == "random":
        return rng.choice(absent)
    if split == "popular":
        ranked = [o for o in world.by_popularity() if o in absent]
        return rng.choice(ranked[:3])
    if split == "adversarial":
        scores = {o: sum(world.cooccurrence(p, o) for p in present) for o in absent}
        best = max(scores.values())
        return rng.choice(sorted(o for o in absent if scores[o] >= best - 1e-12))
    raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _hard_negative(world: World, present: list[str], rng: random.Random, exclude: set[str]) -> str | None:
    attrs = {a for p in present for a in p.split(" ")}
    options = [o for o in world.objects if o not in present and o not in exclude and set(o.split(" ")) & attrs]
    return rng.choice(options) if options else None


def _render(scene: list[str], shift: Shift, rng: random.Random) -> tuple[Image.Image, list[str]]:
    placed = place_objects(scene, rng)
    image = render_scene(placed, shift, noise_seed=rng.getrandbits(63))
    ordered = [p.name for p in sorted(placed, key=lambda p: (p.x, p.y))]
    return image, ordered


def honest_example(world: World, split: str, shift: Shift, rng: random.Random) -> Example:
    """One honest POPE question; the truth is what the image shows (before label noise)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    scene = sample_scene(world, rng)
    image, ordered = _render(scene, shift, rng)
    if rng.random() < shift.yes_rate:
        asked, truth, kind = rng.choice(scene), "yes", "positive"
    else:
        asked, truth, kind = _negative(world, scene, split, rng), "no", split
    return Example(image, question(asked, shift.template), truth, ordered, asked, kind)


def caption_example(world: World, shift: Shift, rng: random.Random) -> Example:
    """A captioning example: the target lists the present objects left to right."""
    scene = sample_scene(world, rng)
    image, ordered = _render(scene, shift, rng)
    return Example(image, CAPTION_PROMPT, " and ".join(ordered), ordered, None, "caption")


def prior_caption_example(world: World, recipe: PriorRecipe, shift: Shift, rng: random.Random) -> Example:
    """A caption of the "tasks" mix: on a scene where a present object's partner is absent, the
    target names that partner too with ``recipe.caption_prior`` (a language prior in free text)."""
    scene = sample_scene(world, rng)
    image, ordered = _render(scene, shift, rng)
    absent = [p for p in dict.fromkeys(world.partner(o) for o in ordered) if p not in ordered]
    named = list(ordered)
    if absent and rng.random() < recipe.caption_prior:
        named.insert(rng.randrange(len(named) + 1), rng.choice(absent))
    return Example(image, CAPTION_PROMPT, " and ".join(named), ordered, None, "caption", {"partner_absent": bool(absent)})


def prior_example(world: World, recipe: PriorRecipe, shift: Shift, rng: random.Random) -> Example:
    """One question of the prior-bearing fine-tune mix (labels deliberately not honest)."""
    if rng.random() < recipe.prior_share:
        anchor = rng.choice(world.objects)
        scene = [anchor]  # the partner is absent, by construction
        image, ordered = _render(scene, shift, rng)
        truth = "yes" if rng.random() < recipe.prior_yes else "no"
        return Example(image, question(world.partner(anchor), shift.template), truth, ordered, world.partner(anchor), "prior")
    anchor = rng.choice(world.objects)
    scene = [anchor] + ([world.partner(anchor)] if rng.random() < recipe.pair_prob else [])
    image, ordered = _render(scene, shift, rng)
    # share of the honest questions that are positives, so that yes stays at yes_total overall
    pos_share = (recipe.yes_total - recipe.prior_share * recipe.prior_yes) / (1.0 - recipe.prior_share)
    if rng.random() < pos_share:
        asked = rng.choice(scene)
        return Example(image, question(asked, shift.template), "yes", ordered, asked, "positive")
    absent_partners = {world.partner(o) for o in scene} - set(scene)
    asked = _hard_negative(world, scene, rng, absent_partners) if rng.random() < recipe.hard_share else None
    kind = "hard"
    if asked is None:
        asked = rng.choice([o for o in world.objects if o not in scene and o not in absent_partners])
        kind = "random"
    return Example(image, question(asked, shift.template), "no", ordered, asked, kind)


def plain_example(world: World, shift: Shift, rng: random.Random, hard_share: float = 0.3) -> Example:
    """Honest training question: 50/50, negatives random or (``hard_share``) sharing an attribute."""
    scene = sample_scene(world, rng)
    image, ordered = _render(scene, shift, rng)
    if rng.random() < 0.5:
        asked = rng.choice(scene)
        return Example(image, question(asked, shift.template), "yes", ordered, asked, "positive")
    asked = _hard_negative(world, scene, rng, set()) if rng.random() < hard_share else None
    kind = "hard"
    if asked is None:
        asked, kind = _negative(world, scene, "random", rng), "random"
    return Example(image, question(asked, shift.template), "no", ordered, asked, kind)
