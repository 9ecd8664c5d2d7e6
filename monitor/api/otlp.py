"""``POST /v1/traces``: OTLP/HTTP trace export (protobuf or JSON, optionally gzip) -> samples.

Point any OpenTelemetry SDK's OTLP/HTTP exporter at ``http://<api.listen>/v1/traces``. Each GenAI
span becomes a sample (:mod:`monitor.api.otlp_spans` reads the conventions) stored like one of
``POST /v1/samples`` (the same ingest, :func:`monitor.api.ingest.ingest_batch`), idempotent by a
sample id derived from trace and span id. The bearer token and the body limit
(``api.max_body_bytes``) are the app's :class:`~monitor.api.guard.WriteGuard`, as for every write;
a gzip or deflate body is held to the same limit once inflated. The answer follows the OTLP/HTTP
specification: 200 with an ``ExportTraceServiceResponse`` in the request's encoding, whose
``partial_success`` counts the GenAI spans that were dropped and names why (``no_image``,
``no_answer``, ...); spans that are no LLM call are ignored (a warning in the same message, not a
rejection); 400 (a ``google.rpc.Status``, or a JSON error) for a body that does not decode, 413 over
the limit, 415 for another content type. Counts: ``vlmwatch_api_otlp_spans_total{outcome}`` and
``vlmwatch_api_otlp_spans_dropped_total{reason}``.
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from collectors.sample import DropSample
from monitor import metrics
from monitor.api.otlp_spans import DROP_REASONS, NotGenAI, Span, SpanSample, span_to_sample
from monitor.api.schemas import SampleIn
from monitor.config import Settings

__all__ = ["register_otlp", "decode_request", "export_spans"]

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_MAX_NAMED = 5  # dropped spans named one by one in error_message


class BadRequest(ValueError):
    """The body is not an OTLP trace export (answered 400)."""


class TooLarge(ValueError):
    """The decompressed body is over ``api.max_body_bytes`` (answered 413; the guard bounds it as sent)."""


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return None if kind is None else getattr(v, kind)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _hex_ids_to_base64(obj: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping expects base64 for bytes."""
    if isinstance(obj, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in _ID_FIELDS and isinstance(v, str) else
                    _hex_ids_to_base64(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_hex_ids_to_base64(x) for x in obj]
    return obj


def decode_request(body: bytes, content_type: str) -> list[Span]:
    """The spans of an OTLP trace export body; :class:`BadRequest` naming what is wrong."""
    req = ExportTraceServiceRequest()
    try:
        if content_type == PROTOBUF:
            req.ParseFromString(body)
        else:
            json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), req, ignore_unknown_fields=True)
    except (DecodeError, ValueError, json_format.ParseError, TypeError, AttributeError) as e:
        raise BadRequest(f"body is not an OTLP ExportTraceServiceRequest ({content_type}): {e}") from None
    spans = []
    for rs in req.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                spans.append(Span(trace_id=sp.trace_id.hex(), span_id=sp.span_id.hex(), name=sp.name,
                                  start_ns=int(sp.start_time_unix_nano), attributes=_attrs(sp.attributes),
                                  events=[(e.name, _attrs(e.attributes)) for e in sp.events], resource=resource))
    return spans


def _sample_in(smp: SpanSample) -> SampleIn:
    return SampleIn(id=smp.id, ts=smp.ts, model=smp.model, image=smp.image, prompt=smp.prompt, answer=smp.answer,
                    response_id=smp.response_id, meta=smp.meta)


def _message(drops: list[tuple[str, str, str]], ignored: int) -> str:
    parts = []
    if drops:
        by = Counter(r for _, r, _ in drops)
        parts.append(f"{len(drops)} GenAI span(s) dropped: " + ", ".join(f"{r}={n}" for r, n in sorted(by.items())))
        parts += [f"span {sid}: {reason} ({detail})" for sid, reason, detail in drops[:_MAX_NAMED]]
    if ignored:
        parts.append(f"{ignored} span(s) ignored: no LLM call (no gen_ai.* / llm.* attributes, or an agent, tool or "
                     "embedding span)")
    return "; ".join(parts)


def export_spans(sessions: sessionmaker[Session], spans: list[Span], settings: Settings) -> ExportTraceServiceResponse:
    """Convert, store and count; the OTLP response with the partial success."""
    from monitor.api.ingest import ingest_batch

    drops: list[tuple[str, str, str]] = []  # (span id, reason, detail)
    ignored = 0
    samples: list[SampleIn] = []
    for span in spans:
        try:
            samples.append(_sample_in(span_to_sample(span)))
        except NotGenAI:
            ignored += 1
        except DropSample as e:
            drops.append((span.span_id, e.reason, e.detail))
        except ValidationError as e:
            drops.append((span.span_id, "invalid", "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}"
                                                             for x in e.errors())))
    accepted = duplicates = 0
    if samples:
        out = ingest_batch(sessions, samples, max_image_bytes=settings.storage.max_image_bytes, source="otlp",
                           tasks=settings.task_rules())
        accepted, duplicates = out.accepted, out.duplicates
        for r in out.rejected:
            reason = "bad_image" if "image" in r.reason else "rejected"
            drops.append((samples[r.index].meta["otel"]["span_id"], reason, r.reason.partition(": ")[2] or r.reason))
    metrics.API_OTLP_SPANS.labels("accepted").inc(accepted)
    metrics.API_OTLP_SPANS.labels("duplicate").inc(duplicates)
    metrics.API_OTLP_SPANS.labels("dropped").inc(len(drops))
    metrics.API_OTLP_SPANS.labels("ignored").inc(ignored)
    for _, reason, _ in drops:
        metrics.API_OTLP_DROPPED.labels(reason).inc()
    if drops:
        log.info("OTLP export: %d sample(s) stored, %d duplicate(s), %d span(s) dropped, %d ignored",
                 accepted, duplicates, len(drops), ignored)
    resp = ExportTraceServiceResponse()
    if drops or ignored:
        resp.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=len(drops), error_message=_message(drops, ignored)))
    return resp


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as the client encoded it (gzip, deflate or none), never inflated past ``limit``."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"unsupported content-encoding {encoding!r} (gzip, deflate or none)")
    d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"body is not valid {encoding}: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise TooLarge(f"decompressed body over api.max_body_bytes={limit:,} bytes")
    if not d.eof:
        raise BadRequest(f"{encoding} body is truncated")
    return out


def _error(status: int, message: str, content_type: str) -> Response:
    if content_type == PROTOBUF:
        from google.rpc.status_pb2 import Status

        return Response(Status(code={400: 3, 413: 8, 415: 3}.get(status, 2), message=message).SerializeToString(),
                        status_code=status, media_type=PROTOBUF)
    return Response(json.dumps({"error": message}), status_code=status, media_type=JSON)


def register_otlp(app: FastAPI, settings: Settings) -> None:
    """Add ``POST /v1/traces`` to ``app`` (its WriteGuard covers it as every write route)."""
    for reason in DROP_REASONS:  # zeros, so dashboards see every reason before the first drop
        metrics.API_OTLP_DROPPED.labels(reason)

    @app.post("/v1/traces", summary="OTLP/HTTP trace export: GenAI spans become samples",
              response_class=Response, openapi_extra={"requestBody": {"content": {
                  PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                  JSON: {"schema": {"type": "object", "description": "OTLP/JSON ExportTraceServiceRequest"}}}}})
    async def post_traces(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (PROTOBUF, JSON):
            return _error(415, f"content-type must be {PROTOBUF} or {JSON}, got {content_type or 'none'!r}", JSON)
        try:
            body = _inflate(await request.body(), request.headers.get("content-encoding", ""),
                            settings.api.max_body_bytes)
            spans = decode_request(body, content_type)
        except TooLarge as e:
            return _error(413, str(e), content_type)
        except BadRequest as e:
            return _error(400, str(e), content_type)
        resp = await run_in_threadpool(export_spans, request.app.state.sessions, spans, settings)
        if content_type == PROTOBUF:
            return Response(resp.SerializeToString(), media_type=PROTOBUF)
        return Response(json_format.MessageToJson(resp, indent=None), media_type=JSON)
