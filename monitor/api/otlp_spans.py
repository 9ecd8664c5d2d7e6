"""GenAI spans -> samples: where each tracing convention keeps the model, the prompt, the image and the answer.

Pure functions over decoded spans (:class:`Span`: attribute values as Python values); no HTTP, no
database. Layouts read, first one present wins for the input and for the output separately:

1. **OpenTelemetry GenAI** (semantic conventions 1.37 and later): ``gen_ai.input.messages`` and
   ``gen_ai.output.messages`` (structured, or a JSON string) on the span or on its
   ``gen_ai.client.inference.operation.details`` event, ``gen_ai.system_instructions``; message
   parts ``text`` (``content``), ``blob`` (``content``: base64 or bytes, ``mime_type``,
   ``modality: image``), ``uri`` and ``file_data`` (``uri``); tool-call and reasoning parts are skipped.
2. **Indexed GenAI attributes** (OpenLLMetry and GenAI conventions up to 1.36):
   ``gen_ai.prompt.N.role`` / ``.content`` (text, or a JSON list of OpenAI content parts) and
   ``gen_ai.completion.N.content``.
3. **OpenInference** (Phoenix, Arize): ``llm.input_messages.N.message.role`` / ``.content`` /
   ``.contents.M.message_content.type|text|image.image.url``, ``llm.output_messages.N.message...``;
   ``output.value`` holding the provider's JSON answer gives the response id (and the answer and
   its token log-probabilities when no output messages were recorded).

Model: ``gen_ai.request.model``, ``gen_ai.response.model``, ``llm.request.model_name``,
``llm.model_name``; response id: ``gen_ai.response.id``. Images are data URLs or http(s) URLs, as
everywhere else; the prompt is the last user message's text and the conversation must hold exactly
one image (the rules of :func:`collectors.exchange.parse_chat_request`, which this reuses). A span
that is no LLM call (no GenAI attributes; an agent, tool or embedding span) is ignored; a GenAI span
that cannot become a sample raises :class:`~collectors.sample.DropSample` with a reason.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from collectors.exchange import Answer, answer_from_json, parse_chat_request, with_answer_meta
from collectors.sample import DropSample

__all__ = ["Span", "SpanSample", "NotGenAI", "DROP_REASONS", "span_to_sample", "sample_id_for"]

DROP_REASONS = (
    "no_model", "no_prompt", "no_answer", "no_image", "unsupported_content", "bad_image", "invalid", "rejected",
)
INFERENCE_OPERATIONS = {"chat", "text_completion", "generate_content"}  # gen_ai.operation.name of one model call
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
_INDEXED = re.compile(r"^(?P<prefix>gen_ai\.prompt|gen_ai\.completion|llm\.input_messages|llm\.output_messages)"
                      r"\.(?P<n>\d+)\.(?P<rest>.+)$")
_OI_CONTENT = re.compile(r"^message\.contents\.(?P<m>\d+)\.message_content\.(?P<field>.+)$")


class NotGenAI(Exception):
    """The span is no LLM call (ignored, counted apart from drops)."""


@dataclass(frozen=True)
class Span:
    trace_id: str  # hex
    span_id: str  # hex
    name: str
    start_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanSample:
    """What the API stores for one GenAI span (the fields of a ``SampleIn``)."""

    id: str
    ts: datetime | None
    model: str
    prompt: str
    answer: str
    image: str  # data URL or http(s) URL
    response_id: str | None
    meta: dict[str, Any]


def sample_id_for(trace_id: str, span_id: str) -> str:
    """The sample id of a span: the same span sent twice is stored once."""
    return f"otel-{trace_id}-{span_id}"


def _structured(value: Any) -> Any:
    """Structured attribute values as they are; JSON strings (the conventions allow both) decoded."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _genai_part(part: Any) -> dict[str, Any] | None:
    """One GenAI message part as an OpenAI content part (None: not content, e.g. a tool call)."""
    if not isinstance(part, dict):
        raise DropSample("unsupported_content", "message part is not an object")
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": str(part.get("content", ""))}
    if kind in ("blob", "uri", "file_data", "file"):
        mime = str(part.get("mime_type") or "")
        if part.get("modality", "image") != "image" and not mime.startswith("image/"):
            raise DropSample("unsupported_content", f"{part.get('modality')} part (only images are monitored)")
        if kind == "blob":
            data = part.get("content")
            b64 = base64.b64encode(data).decode() if isinstance(data, bytes) else str(data or "")
            return _image_part(f"data:{mime if mime.startswith('image/') else 'image/png'};base64,{b64}")
        if isinstance(part.get("uri"), str):
            return _image_part(part["uri"])
        raise DropSample("unsupported_content", f"{kind} part without a uri (file ids cannot be fetched)")
    if kind == "image_url":  # an OpenAI content part recorded as is
        return part
    return None  # tool_call, tool_call_response, reasoning, ...: not what the monitor re-runs


def _genai_messages(value: Any) -> list[dict[str, Any]]:
    msgs = _structured(value)
    if not isinstance(msgs, list):
        raise DropSample("unsupported_content", "gen_ai messages are not a list")
    out = []
    for m in msgs:
        if not isinstance(m, dict):
            raise DropSample("unsupported_content", "gen_ai message is not an object")
        parts = [p for p in (_genai_part(x) for x in m.get("parts") or []) if p is not None]
        out.append({"role": m.get("role"), "content": parts})
    return out


def _indexed(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """``prefix.N.<rest>`` attributes grouped by N, in index order."""
    groups: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        m = _INDEXED.match(key)
        if m and m.group("prefix") == prefix:
            groups.setdefault(int(m.group("n")), {})[m.group("rest")] = value
    return [groups[i] for i in sorted(groups)]


def _openllmetry_content(content: Any) -> Any:
    parts = _structured(content)
    return parts if isinstance(parts, list) else ("" if content is None else str(content))


def _openinference_message(flat: dict[str, Any]) -> dict[str, Any]:
    contents: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        m = _OI_CONTENT.match(key)
        if m:
            contents.setdefault(int(m.group("m")), {})[m.group("field")] = value
    if not contents:
        return {"role": flat.get("message.role"), "content": str(flat.get("message.content") or "")}
    parts = []
    for i in sorted(contents):
        c = contents[i]
        if c.get("type") == "text" or ("text" in c and "type" not in c):
            parts.append({"type": "text", "text": str(c.get("text", ""))})
        elif c.get("type") == "image" or "image.image.url" in c:
            parts.append(_image_part(str(c.get("image.image.url", ""))))
        else:
            raise DropSample("unsupported_content", f"message_content type {c.get('type')!r}")
    return {"role": flat.get("message.role"), "content": parts}


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _details(span: Span) -> dict[str, Any]:
    """Span attributes over those of its operation-details event (the event form of the same keys)."""
    merged: dict[str, Any] = {}
    for name, attrs in span.events:
        if name == DETAILS_EVENT:
            merged.update(attrs)
    return {**merged, **span.attributes}


def _inputs(a: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    if "gen_ai.input.messages" in a:
        msgs = _genai_messages(a["gen_ai.input.messages"])
        system = _structured(a.get("gen_ai.system_instructions"))
        if isinstance(system, list):
            parts = [p for p in (_genai_part(x) for x in system) if p is not None]
            msgs.insert(0, {"role": "system", "content": parts})
        return "gen_ai", msgs
    if prompts := _indexed(a, "gen_ai.prompt"):
        return "gen_ai_indexed", [{"role": p.get("role"), "content": _openllmetry_content(p.get("content"))}
                                  for p in prompts]
    if msgs := _indexed(a, "llm.input_messages"):
        return "openinference", [_openinference_message(m) for m in msgs]
    return "", []


def _answer(a: dict[str, Any]) -> tuple[str | None, str | None, Answer | None]:
    """(answer text of choice 0, response id, the provider's JSON answer when recorded in ``output.value``)."""
    rid = a.get("gen_ai.response.id")
    provider = _structured(a.get("output.value")) if a.get("output.mime_type") == "application/json" else None
    from_json = None
    if isinstance(provider, dict) and provider.get("choices"):
        try:
            from_json = answer_from_json(provider)
        except DropSample:
            from_json = None
        rid = rid or (from_json.response_id if from_json else None)
    if "gen_ai.output.messages" in a:
        out = _genai_messages(a["gen_ai.output.messages"])
        text = _text(out[0]) if out else None
    elif completions := _indexed(a, "gen_ai.completion"):
        text = str(completions[0].get("content") or "")
    elif outputs := _indexed(a, "llm.output_messages"):
        text = _text(_openinference_message(outputs[0]))
    else:
        text = from_json.text if from_json else None
    return text, (str(rid) if rid else None), from_json


def _model(a: dict[str, Any]) -> str | None:
    for key in ("gen_ai.request.model", "gen_ai.response.model", "llm.request.model_name", "llm.model_name"):
        if isinstance(a.get(key), str) and a[key]:
            return str(a[key])
    return None


def _is_llm_call(a: dict[str, Any]) -> bool:
    kind = a.get("openinference.span.kind")
    if kind is not None:
        return str(kind).upper() == "LLM"
    op = a.get("gen_ai.operation.name")
    if op is not None:
        return str(op) in INFERENCE_OPERATIONS
    return any(k.startswith(("gen_ai.", "llm.")) for k in a)


def span_to_sample(span: Span) -> SpanSample:
    """The sample of one GenAI span; :class:`NotGenAI` or :class:`DropSample` (with a reason) otherwise."""
    a = _details(span)
    if not _is_llm_call(a):
        raise NotGenAI(span.name)
    model = _model(a)
    if model is None:
        raise DropSample("no_model", "no gen_ai.request.model, gen_ai.response.model or llm.model_name")
    convention, messages = _inputs(a)
    if not any(m.get("role") == "user" for m in messages):
        raise DropSample("no_prompt", "no user message (input messages not recorded?)")
    body: dict[str, Any] = {"model": model, "messages": messages}
    for key in ("temperature", "top_p", "max_tokens", "seed"):
        if f"gen_ai.request.{key}" in a:
            body[key] = a[f"gen_ai.request.{key}"]
    _, prompt, image, meta = parse_chat_request(body)
    meta.pop("stream", None)  # a request flag of the proxy's, unknown here
    answer, response_id, provider = _answer(a)
    if not answer or not answer.strip():
        raise DropSample("no_answer", "no output message text (output messages not recorded?)")
    otel = {"trace_id": span.trace_id, "span_id": span.span_id, "span_name": span.name, "convention": convention}
    if span.resource.get("service.name"):
        otel["service"] = str(span.resource["service.name"])
    meta = {**meta, "otel": otel}
    if provider is not None:
        meta = with_answer_meta(meta, provider)
    ts = datetime.fromtimestamp(span.start_ns / 1e9, tz=timezone.utc) if span.start_ns else None
    return SpanSample(id=sample_id_for(span.trace_id, span.span_id), ts=ts, model=model, prompt=prompt, answer=answer,
                      image=image, response_id=response_id, meta=meta)
