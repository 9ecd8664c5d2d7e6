"""The SynPOPE world: objects, their popularity and their designed co-occurrence structure.

Objects are coloured shapes ("red circle"). Twelve objects are used: each of six colours with
two shapes, each shape with two colours, so that a name is only answered correctly when colour
and shape are bound together. Objects come in six symmetric *partner pairs* that share neither
colour nor shape; a scene that holds one member of a pair usually holds the other too. That
co-occurrence is what a language prior can learn, and what POPE's adversarial negatives probe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = [
    "COLOURS",
    "COLOUR_RGB",
    "SHAPES",
    "OBJECTS",
    "TEMPLATES",
    "DEFAULT_TEMPLATE",
    "CAPTION_PROMPT",
    "World",
    "make_pairing",
]

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 185),
    "orange": (245, 135, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")


def _objects() -> tuple[str, ...]:
    # colour i is drawn as shape i and shape i+2: every colour and every shape occurs twice.
    out = []
    for i, colour in enumerate(COLOURS):
        out.append(f"{colour} {SHAPES[i]}")
        out.append(f"{colour} {SHAPES[(i + 2) % len(SHAPES)]}")
    return tuple(out)


OBJECTS: tuple[str, ...] = _objects()

# Question templates; the first is POPE's. Others are the "prompt template" shift knob.
TEMPLATES: dict[str, str] = {
    "pope": "Is there a {object} in the image?",
    "contain": "Does the image contain a {object}?",
    "see": "Do you see a {object} in this picture?",
    "present": "Is a {object} present here?",
}
DEFAULT_TEMPLATE = "pope"
CAPTION_PROMPT = "Describe the image."


def _parts(name: str) -> tuple[str, str]:
    colour, shape = name.split(" ")
    return colour, shape


def _shares_attribute(a: str, b: str) -> bool:
    ca, sa = _parts(a)
    cb, sb = _parts(b)
    return ca == cb or sa == sb


def make_pairing(objects: tuple[str, ...], seed: int) -> tuple[tuple[str, str], ...]:
    """A random perfect matching of ``objects`` into pairs sharing neither colour nor shape."""
    rng = random.Random(seed)
    for _ in range(10_000):
        pool = list(objects)
        rng.shuffle(pool)
        pairs: list[tuple[str, str]] = []
        ok = True
        while pool:
            a = pool.pop()
            options = [b for b in pool if not _shares_attribute(a, b)]
            if not options:
                ok = False
                break
            b = rng.choice(options)
            pool.remove(b)
            pairs.append((a, b))
        if ok:
            return tuple(sorted(tuple(sorted(p)) for p in pairs))  # type: ignore[misc]
    raise RuntimeError("no valid pairing found")  # pragma: no cover - 12 objects always pair


@dataclass(frozen=True)
class World:
    """Objects, popularity and co-occurrence of one SynPOPE distribution.

    ``pairing_seed`` chooses the partner pairs (a different seed is the *hardness* shift: a new
    co-occurrence matrix). ``pair_prob`` is the chance that an anchor's partner is in the scene,
    ``extra_prob`` the chance of one more object drawn by popularity.
    """

    pairing_seed: int = 0
    pair_prob: float = 0.7
    extra_prob: float = 0.3
    zipf: float = 0.6  # popularity weight of the k-th object is 1 / (1 + zipf * k)
    objects: tuple[str, ...] = OBJECTS
    pairs: tuple[tuple[str, str], ...] = field(init=False)
    popularity: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        for name, p in (("pair_prob", self.pair_prob), ("extra_prob", self.extra_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        object.__setattr__(self, "pairs", make_pairing(self.objects, self.pairing_seed))
        order = list(self.objects)
        random.Random(1000 + self.pairing_seed).shuffle(order)
        weights = {o: 1.0 / (1.0 + self.zipf * k) for k, o in enumerate(order)}
        total = sum(weights.values())
        object.__setattr__(self, "popularity", {o: w / total for o, w in weights.items()})

    def partner(self, obj: str) -> str:
        for a, b in self.pairs:
            if obj == a:
                return b
            if obj == b:
                return a
        raise KeyError(f"unknown object {obj!r}")

    def cooccurrence(self, a: str, b: str) -> float:
        """Co-occurrence weight of two distinct objects (POPE ranks adversarial negatives by it)."""
        if a == b:
            return 0.0
        if self.partner(a) == b:
            return self.pair_prob
        # extras are drawn by popularity, independently of the anchor
        return self.extra_prob * (self.popularity[a] + self.popularity[b])

    def by_popularity(self) -> list[str]:
        return sorted(self.objects, key=lambda o: (-self.popularity[o], o))
