"""Labelled samples for probe training and comparison, read from a samples file.

A line is the samples-file object (``id``, ``image``, ``prompt``, ``answer``, optional ``label``)
and, for SynPOPE data, ``truth``. Labels are *honest*: whether the model's own answer matches the
truth. SynPOPE files carry the truth in ``answer`` as well, so by default (``answers="auto"``) a
line with ``truth`` gets the model's own greedy answer, labelled against the truth; a line without
``truth`` keeps its ``answer`` and ``label`` (e.g. served answers with human labels).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["ProbeSample", "read_samples", "label_samples", "open_image", "AnswerSource"]

log = logging.getLogger(__name__)

AnswerSource = Literal["auto", "file", "model"]


@dataclass(frozen=True)
class ProbeSample:
    id: str
    prompt: str
    image: bytes | None
    answer: str | None
    label: bool | None
    truth: str | None
    group: str  # samples sharing an image share a group (kept on one side of every split)
    meta: dict[str, Any]


def open_image(data: bytes | None) -> Image.Image | None:
    if data is None:
        return None
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def read_samples(path: str | Path, limit: int | None = None) -> list[ProbeSample]:
    """Parse a samples file; errors name the line and the field that is wrong."""
    from storage.images import ImageError, decode_image_ref

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"samples file not found: {p}")
    out: list[ProbeSample] = []
    with p.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON: {e}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: a line must be a JSON object")
            prompt = obj.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                raise ValueError(f"{where}: 'prompt' must be a non-empty string")
            image: bytes | None = None
            if obj.get("image") is not None:
                try:
                    ref = decode_image_ref(obj["image"], base_dir=p.parent)
                except ImageError as e:
                    raise ValueError(f"{where}: image: {e}") from None
                if ref.data is None:
                    raise ValueError(f"{where}: image URLs are not fetched; give a path, data URL or base64")
                image = ref.data
            label = obj.get("label")
            if label is not None and not isinstance(label, bool):
                raise ValueError(f"{where}: 'label' must be true or false, got {label!r}")
            answer, truth = obj.get("answer"), obj.get("truth")
            for name, value in (("answer", answer), ("truth", truth)):
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"{where}: {name!r} must be a string")
            group = hashlib.sha256(image).hexdigest() if image is not None else str(obj.get("id", lineno))
            out.append(
                ProbeSample(
                    id=str(obj.get("id", lineno)), prompt=prompt, image=image, answer=answer, label=label,
                    truth=truth, group=group, meta=dict(obj.get("meta") or {}),
                )
            )
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise ValueError(f"samples file {p} holds no samples")
    return out


def label_samples(adapter: Any, samples: list[ProbeSample], answers: AnswerSource = "auto",
                  progress: bool = True, max_new_tokens: int = 12) -> list[ProbeSample]:
    """Give every sample the model's answer and an honest label.

    A label from ``truth`` is the verdict of the judge of the line's SynPOPE task (``meta.task``;
    ``yesno`` when absent: normalised answers equal), :func:`monitor.synpope.judge`.

    ``answers``: ``file`` keeps the file's answers; ``model`` regenerates every answer greedily
    (every line needs ``truth``); ``auto`` regenerates where a line has ``truth`` (or no answer).
    A label is recomputed from ``truth`` whenever ``truth`` is present.
    """
    from monitor.synpope.judges import judge

    if answers not in ("auto", "file", "model"):
        raise ValueError(f"answers must be auto, file or model, got {answers!r}")
    todo = [
        i for i, s in enumerate(samples)
        if answers == "model" or (answers == "auto" and (s.truth is not None or s.answer is None))
    ]
    if answers != "file" and todo and any(samples[i].truth is None for i in todo):
        bad = next(samples[i].id for i in todo if samples[i].truth is None)
        raise ValueError(f"sample {bad}: no 'truth' to label a generated answer against")
    out = list(samples)
    if todo:
        from monitor.probe.greedy import greedy_answers

        encs = [adapter.encode(open_image(out[i].image), out[i].prompt) for i in todo]
        answers = greedy_answers(adapter, encs, max_new_tokens=max_new_tokens, progress=progress)
        for i, answer in zip(todo, answers):
            out[i] = replace(out[i], answer=answer)
    for i, s in enumerate(out):
        if s.answer is None:
            raise ValueError(f"sample {s.id}: no answer (use --answers model with 'truth' to generate one)")
        if s.truth is not None:
            out[i] = replace(s, label=judge(str(s.meta.get("task", "yesno")), s.answer, s.truth).correct)
        elif s.label is None:
            raise ValueError(f"sample {s.id}: neither 'label' nor 'truth' to label it")
    n_ok = sum(bool(s.label) for s in out)
    log.info("labelled %d samples: %d correct (%.1f%%)", len(out), n_ok, 100.0 * n_ok / len(out))
    return out
