"""Labelled samples for probe training and comparison, read from a samples file.

A line is the samples-file object ``vlmwatch ingest`` reads (``id``, ``ts``, ``model``, ``image``,
``prompt``, ``answer``, optional ``label``) and, for SynPOPE data, ``truth``. Labels are *honest*:
whether the model's own answer matches the truth. SynPOPE files carry the truth in ``answer`` as well, so by default (``answers="auto"``) a
line with ``truth`` gets the model's own greedy answer, labelled against the truth; a line without
``truth`` keeps its ``answer`` and ``label`` (e.g. served answers with human labels).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from monitor.config import StorageConfig

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


def read_samples(path: str | Path, limit: int | None = None,
                 max_image_bytes: int = StorageConfig().max_image_bytes) -> list[ProbeSample]:
    """Parse a samples file, line by line as ``vlmwatch ingest`` does (:func:`storage.jsonl.parse_sample_line`).

    Errors name the file, the line and the reason. Images must be in the file (path, data URL or
    base64), not behind a URL; ``truth`` (SynPOPE), when present, must be a string.
    """
    from storage.jsonl import LineError, iter_lines, parse_sample_line

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"samples file not found: {p}")
    out: list[ProbeSample] = []
    for lineno, text in iter_lines(p):
        where = f"{p}:{lineno}"
        try:
            rec = parse_sample_line(text, p.parent, max_image_bytes, source="probe")
        except LineError as e:
            raise ValueError(f"{where}: {e}") from None
        if rec.image is None:
            raise ValueError(f"{where}: image URLs are not fetched; give a path, data URL or base64")
        meta = dict(rec.meta or {})
        truth = meta.pop("truth", None)
        if truth is not None and not isinstance(truth, str):
            raise ValueError(f"{where}: 'truth' must be a string")
        out.append(ProbeSample(id=rec.id, prompt=rec.prompt, image=rec.image, answer=rec.answer, label=rec.label,
                               truth=truth, group=hashlib.sha256(rec.image).hexdigest(), meta=meta))
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
