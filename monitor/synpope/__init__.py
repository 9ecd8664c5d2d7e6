"""SynPOPE: POPE-style yes/no object questions on synthetic images, with shift knobs.

``generate(split, n, seed, shift, out)`` writes/returns honest samples-file records;
``iter_examples`` yields (image, prompt, truth) examples; ``training_examples`` is the endless
training stream for the fixture models (honest "plain" or prior-bearing "prior").
"""

from monitor.synpope.generate import SAMPLES_FILE, generate, iter_examples, training_examples
from monitor.synpope.scenes import SPLITS, Example, PriorRecipe
from monitor.synpope.shift import Shift
from monitor.synpope.world import OBJECTS, TEMPLATES, World

__all__ = [
    "SAMPLES_FILE",
    "SPLITS",
    "OBJECTS",
    "TEMPLATES",
    "Example",
    "PriorRecipe",
    "Shift",
    "World",
    "generate",
    "iter_examples",
    "training_examples",
]
