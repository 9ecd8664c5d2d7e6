"""SynPOPE: POPE-style object questions and free-form tasks on synthetic images, with shift knobs.

``generate(split, n, seed, shift, out, task=...)`` writes/returns honest samples-file records of a
task (``yesno``, ``describe``, ``count``, ``attribute``, ``list`` or ``mix``); ``judge(task, answer,
truth)`` decides correctness;
``iter_examples`` yields (image, prompt, truth) examples; ``training_examples`` is the endless
training stream for the fixture models (honest "plain" or prior-bearing "prior").
"""

from monitor.synpope.generate import SAMPLES_FILE, generate, iter_examples, training_examples
from monitor.synpope.judges import Verdict, judge
from monitor.synpope.scenes import SPLITS, Example, PriorRecipe
from monitor.synpope.shift import Shift
from monitor.synpope.tasks import FREEFORM_TASKS, TASKS
from monitor.synpope.world import OBJECTS, TEMPLATES, World

__all__ = [
    "SAMPLES_FILE",
    "SPLITS",
    "OBJECTS",
    "TEMPLATES",
    "Example",
    "FREEFORM_TASKS",
    "TASKS",
    "Verdict",
    "judge",
    "PriorRecipe",
    "Shift",
    "World",
    "generate",
    "iter_examples",
    "training_examples",
]
