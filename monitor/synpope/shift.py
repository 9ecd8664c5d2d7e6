"""Shift knobs for SynPOPE: covariate, hardness, label prior, concept, prompt and label noise."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from monitor.synpope.world import TEMPLATES

__all__ = ["Shift", "BACKGROUNDS", "CONCEPTS"]

BACKGROUNDS = ("plain", "dark", "random", "textured")
CONCEPTS = ("none", "colours", "shapes")


@dataclass(frozen=True)
class Shift:
    """How a SynPOPE distribution departs from the reference one. Defaults: no shift.

    - ``noise``: std of Gaussian pixel noise, as a fraction of the 0..255 range.
    - ``blur``: Gaussian blur radius in pixels.
    - ``contrast``: contrast factor (1 = unchanged, < 1 flatter).
    - ``background``: ``plain`` (light grey), ``dark``, ``random`` (a random colour per image) or
      ``textured`` (random blotches).
    - ``cooc_seed``: partner pairing of the co-occurrence structure (hardness: a new matrix).
    - ``yes_rate``: share of questions whose true answer is "yes".
    - ``concept``: ``colours`` draws each colour name in another colour, ``shapes`` draws each
      shape name as another shape (the words keep their names: the concept moved).
    - ``template``: question template key (see ``world.TEMPLATES``).
    - ``label_noise``: share of ground-truth labels flipped.
    """

    noise: float = 0.0
    blur: float = 0.0
    contrast: float = 1.0
    background: str = "plain"
    cooc_seed: int = 0
    yes_rate: float = 0.5
    concept: str = "none"
    template: str = "pope"
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"shift noise must be in [0, 1], got {self.noise}")
        if self.blur < 0:
            raise ValueError(f"shift blur must be >= 0, got {self.blur}")
        if self.contrast <= 0:
            raise ValueError(f"shift contrast must be > 0, got {self.contrast}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"shift background must be one of {', '.join(BACKGROUNDS)}, got {self.background!r}")
        if not 0.0 <= self.yes_rate <= 1.0:
            raise ValueError(f"shift yes_rate must be in [0, 1], got {self.yes_rate}")
        if self.concept not in CONCEPTS:
            raise ValueError(f"shift concept must be one of {', '.join(CONCEPTS)}, got {self.concept!r}")
        if self.template not in TEMPLATES:
            raise ValueError(f"shift template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        if not 0.0 <= self.label_noise <= 1.0:
            raise ValueError(f"shift label_noise must be in [0, 1], got {self.label_noise}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def changed(self) -> dict[str, Any]:
        """Only the knobs that differ from the reference distribution."""
        ref = Shift()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(ref, f.name)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Shift":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown shift knob(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)
