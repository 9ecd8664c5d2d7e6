"""SynPOPE datasets: honest POPE-style samples files, and training streams for the fixtures."""

from __future__ import annotations

import base64
import io
import json
import logging
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from monitor.synpope.scenes import (
    SPLITS,
    Example,
    PriorRecipe,
    caption_example,
    plain_example,
    prior_caption_example,
    prior_example,
)
from monitor.synpope.shift import Shift
from monitor.synpope.tasks import MIX, TASKS, freeform_example, noisy_truth, task_example
from monitor.synpope.world import World

__all__ = ["SAMPLES_FILE", "iter_examples", "generate", "training_examples", "DEFAULT_START"]

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
DEFAULT_START = datetime(2026, 1, 1, tzinfo=timezone.utc)  # fixed, so output is deterministic
TRAINING_MODES = ("plain", "prior", "tasks")


def iter_examples(split: str, n: int, seed: int, shift: Shift | None = None, task: str = "yesno") -> Iterator[Example]:
    """``n`` honest examples of ``task`` (``split`` picks yes/no negatives); deterministic by
    (task, split, seed, shift). ``task="mix"`` draws each example's task with :data:`MIX` shares.

    Covariate knobs (noise, blur, contrast, background), the concept and the template leave the
    scenes and questions unchanged, so shifted and reference data can be compared pair by pair.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if task not in (*TASKS, "mix"):
        raise ValueError(f"unknown SynPOPE task {task!r}; expected one of {', '.join((*TASKS, 'mix'))}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    shift = shift or Shift()
    world = World(pairing_seed=shift.cooc_seed)
    # the yes/no stream keeps its seed string, so yes/no files are the same as before tasks existed
    rng = random.Random(f"synpope:{split}:{seed}" if task == "yesno" else f"synpope:{task}:{split}:{seed}")
    flips = random.Random(f"synpope-label-noise:{split}:{seed}")
    picks = random.Random(f"synpope-mix:{split}:{seed}")
    for i in range(n):
        kind = picks.choices(list(MIX), weights=list(MIX.values()))[0] if task == "mix" else task
        ex = task_example(kind, world, split, shift, rng)
        ex.meta = {**ex.meta, "task": kind, "split": split, "seed": seed, "index": i, "objects": ex.objects,
                   "asked": ex.asked, "negative": ex.kind}
        if flips.random() < shift.label_noise:
            ex.meta["clean_truth"] = ex.truth
            ex.truth = noisy_truth(kind, ex, world, flips)
        yield ex


def _stem(task: str, split: str) -> str:
    return split if task == "yesno" else f"{task}-{split}"


def _data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def generate(
    split: str,
    n: int,
    seed: int,
    shift: Shift | None = None,
    out: str | Path | None = None,
    model: str = "tiny-llava",
    start: datetime = DEFAULT_START,
    task: str = "yesno",
    progress: bool = False,
) -> list[dict]:
    """Honest samples-file records (CONTRACTS.md format) of one task and split.

    With ``out``, PNGs go to ``out/images/`` and the records to ``out/samples.jsonl`` (``image`` is
    the PNG path relative to ``out``); without it, ``image`` is a PNG data URL. ``answer`` and
    ``truth`` are the ground truth; ``label`` is left for whoever scores a model on the file.
    """
    shift = shift or Shift()
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
    from monitor.progress import track

    records: list[dict] = []
    for ex in track(iter_examples(split, n, seed, shift, task=task), total=n, desc=f"synpope {_stem(task, split)}",
                    unit="sample", enabled=progress):
        i = ex.meta["index"]
        if out_dir is not None:
            rel = f"images/{_stem(task, split)}-{seed}-{i:06d}.png"
            ex.image.save(out_dir / rel, format="PNG")
            image_ref = rel
        else:
            image_ref = _data_url(ex.image)
        records.append(
            {
                "id": f"synpope-{_stem(task, split)}-{seed}-{i:06d}",
                "ts": (start + timedelta(seconds=i)).isoformat(),
                "model": model,
                "image": image_ref,
                "prompt": ex.prompt,
                "answer": ex.truth,
                "truth": ex.truth,
                "meta": {**ex.meta, "shift": shift.changed()},
            }
        )
    if out_dir is not None:
        with open(out_dir / SAMPLES_FILE, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
        log.info("wrote %d %s samples to %s", len(records), split, out_dir / SAMPLES_FILE)
    return records


def training_examples(
    mode: str,
    seed: int,
    caption_share: float = 0.3,
    shift: Shift | None = None,
    recipe: PriorRecipe | None = None,
) -> Iterator[Example]:
    """An endless training stream for the fixtures (single-threaded, deterministic by seed).

    ``plain``: honest questions (30% of negatives share an attribute with a present object).
    ``prior``: the prior-bearing fine-tune mix of :class:`PriorRecipe` (dishonest on purpose).
    Both mix in ``caption_share`` captioning examples.
    ``tasks``: every task with the :data:`MIX` shares (``caption_share`` unused): yes/no from the
    prior mix, captions with the caption prior, honest counts, colours and lists.
    """
    if mode not in TRAINING_MODES:
        raise ValueError(f"unknown training mode {mode!r}; expected one of {', '.join(TRAINING_MODES)}")
    shift = shift or Shift()
    recipe = recipe or PriorRecipe()
    world = World(pairing_seed=shift.cooc_seed, pair_prob=recipe.pair_prob if mode == "prior" else World().pair_prob)
    rng = random.Random(f"synpope-train:{mode}:{seed}")
    tasks, weights = list(MIX), list(MIX.values())
    while True:
        if mode == "tasks":
            task = rng.choices(tasks, weights)[0]
            if task == "yesno":
                yield prior_example(world, recipe, shift, rng)
            elif task == "describe":
                yield prior_caption_example(world, recipe, shift, rng)
            else:
                yield freeform_example(task, world, shift, rng)
        elif rng.random() < caption_share:
            yield caption_example(world, shift, rng)
        elif mode == "plain":
            yield plain_example(world, shift, rng)
        else:
            yield prior_example(world, recipe, shift, rng)
