"""Parsing the JSONL files ``vlmwatch ingest`` and ``vlmwatch labels import`` read.

Samples file, one object a line: ``id``, ``ts`` (ISO 8601), ``model``, ``image`` (path relative
to the file, data URL, base64 or http(s) URL), ``prompt``, ``answer``; optional ``label`` (bool),
``response_id``, ``route``, ``task`` (the sample's task; wins over ``collectors.tasks``), ``meta`` (object). Other keys (SynPOPE's ``truth``, ...) are kept in
``meta``. Labels file: ``sample_id`` or ``response_id``, ``correct`` (bool), optional ``source``
(default human) and ``value``. Each parser raises :class:`LineError` with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from storage.images import ImageError, decode_image_ref
from storage.records import DEFAULT_ROUTE, LabelRecord, SampleRecord

__all__ = ["LineError", "iter_lines", "parse_sample_line", "parse_label_line"]


class LineError(ValueError):
    """A line that cannot be used; the message is the reason."""


class _SampleLine(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | int
    ts: datetime
    model: str = Field(min_length=1)
    image: str = Field(min_length=1)
    prompt: str
    answer: str
    label: StrictBool | None = None
    response_id: str | None = None
    route: str = DEFAULT_ROUTE
    task: str | None = None
    meta: dict[str, Any] | None = None


class _LabelLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_id: str | int | None = None
    response_id: str | None = None
    correct: StrictBool
    source: str = "human"
    value: float | None = None


def _reason(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "line"
        if e["type"] == "missing":
            parts.append(f"missing field '{key}'")
        elif e["type"] == "extra_forbidden":
            parts.append(f"unknown field '{key}'")
        else:
            parts.append(f"field '{key}': {e['msg']}")
    return "; ".join(dict.fromkeys(parts))


def _load_object(text: str, max_chars: int, limit_name: str) -> dict[str, Any]:
    if len(text) > max_chars:
        raise LineError(f"line is {len(text):,} characters, over the limit {max_chars:,} ({limit_name})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise LineError(f"invalid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each non-blank line; undecodable UTF-8 is kept for the parser to refuse."""
    with path.open("r", encoding="utf-8", errors="replace", newline="\n") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                yield n, line


def parse_sample_line(text: str, base_dir: Path, max_image_bytes: int, source: str = "ingest") -> SampleRecord:
    """One samples-file line to a :class:`SampleRecord` (image decoded, not yet validated as an image)."""
    # base64 inflates by 4/3; allow room for the other fields
    obj = _load_object(
        text, max_image_bytes * 4 // 3 + 1_000_000, f"its image would be over the limit storage.max_image_bytes={max_image_bytes:,}"
    )
    try:
        line = _SampleLine.model_validate(obj)
    except ValidationError as e:
        raise LineError(_reason(e)) from None
    try:
        ref = decode_image_ref(line.image, base_dir, max_image_bytes)
    except ImageError as e:
        raise LineError(str(e)) from None
    meta = dict(line.model_extra or {})
    if line.meta:
        meta.update(line.meta)
    ts = line.ts if line.ts.tzinfo is not None else line.ts.replace(tzinfo=timezone.utc)
    return SampleRecord(
        id=str(line.id), ts=ts, model=line.model, prompt=line.prompt, answer=line.answer, route=line.route,
        source=source, image=ref.data, image_url=ref.url, response_id=line.response_id, label=line.label,
        meta=meta or None, task=line.task,
    )


def parse_label_line(text: str) -> LabelRecord:
    """One labels-file line to a :class:`LabelRecord`."""
    obj = _load_object(text, 1_000_000, "a label line is small")
    try:
        line = _LabelLine.model_validate(obj)
    except ValidationError as e:
        raise LineError(_reason(e)) from None
    if line.sample_id is None and not line.response_id:
        raise LineError("give 'sample_id' or 'response_id'")
    return LabelRecord(
        correct=line.correct, source=line.source, value=line.value,
        sample_id=None if line.sample_id is None else str(line.sample_id), response_id=line.response_id,
    )
