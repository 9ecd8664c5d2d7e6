"""``POST /v1/traces`` fed by the real OpenTelemetry SDK and its OTLP/HTTP exporter, over both backends.

Spans are made by the SDK (``TracerProvider``, attributes and events as an instrumentation sets
them), exported by ``OTLPSpanExporter`` (protobuf, plain and gzip) to the API on loopback, or
encoded by the SDK's own OTLP encoder and posted as OTLP/JSON.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from sqlalchemy import select

from storage.db import session_factory
from storage.models import Image, Sample
from tests.api.helpers import serve_api
from tests.daemon.helpers import png

TOKEN_ENV = "VLMWATCH_TEST_OTLP_TOKEN"
AUTH = {"Authorization": "Bearer otlp-secret"}


@pytest.fixture
def api(engine, monkeypatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv(TOKEN_ENV, "otlp-secret")
    yield from serve_api(engine, token_env=TOKEN_ENV)


def _data_url(seed: int) -> str:
    return "data:image/png;base64," + base64.b64encode(png(seed)).decode()


def _vlm_calls() -> list:
    """Finished SDK spans: one VLM call per convention, plus spans that cannot be (or are not) samples."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "vqa-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("vqa-app.instrumentation")
    user = [{"role": "user", "parts": [{"type": "text", "content": "Is there a dog?"},
                                       {"type": "blob", "modality": "image", "mime_type": "image/png",
                                        "content": base64.b64encode(png(1)).decode()}]}]
    out = [{"role": "assistant", "parts": [{"type": "text", "content": "yes"}], "finish_reason": "stop"}]
    with tracer.start_as_current_span("POST /vqa"):  # the app's own server span: no LLM call
        with tracer.start_as_current_span("chat tiny-llava") as sp:  # GenAI semconv, attributes (JSON strings)
            sp.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                               "gen_ai.request.model": "tiny-llava", "gen_ai.response.id": "chatcmpl-genai",
                               "gen_ai.request.temperature": 0.0, "gen_ai.input.messages": json.dumps(user),
                               "gen_ai.output.messages": json.dumps(out)})
        with tracer.start_as_current_span("chat tiny-llava") as sp:  # GenAI semconv, the event form
            sp.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "tiny-llava",
                               "gen_ai.response.id": "chatcmpl-event"})
            sp.add_event("gen_ai.client.inference.operation.details", {
                "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
                    {"type": "uri", "modality": "image", "uri": "https://img.example/2.png"},
                    {"type": "text", "content": "Is there a cat?"}]}]),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "no"}]}])})
        with tracer.start_as_current_span("ChatCompletion") as sp:  # OpenInference (Phoenix)
            sp.set_attributes({"openinference.span.kind": "LLM", "llm.model_name": "tiny-llava",
                               "llm.input_messages.0.message.role": "user",
                               "llm.input_messages.0.message.contents.0.message_content.type": "text",
                               "llm.input_messages.0.message.contents.0.message_content.text": "Is there a bird?",
                               "llm.input_messages.0.message.contents.1.message_content.type": "image",
                               "llm.input_messages.0.message.contents.1.message_content.image.image.url": _data_url(3),
                               "llm.output_messages.0.message.role": "assistant",
                               "llm.output_messages.0.message.content": "yes",
                               "output.mime_type": "application/json",
                               "output.value": json.dumps({"id": "chatcmpl-oi", "choices": [
                                   {"index": 0, "message": {"role": "assistant", "content": "yes"}}]})})
        with tracer.start_as_current_span("chat tiny-llava") as sp:  # no image: dropped
            sp.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "tiny-llava",
                               "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
                                   {"type": "text", "content": "Hello?"}]}]),
                               "gen_ai.output.messages": json.dumps(out)})
        with tracer.start_as_current_span("chat tiny-llava") as sp:  # content not recorded: no answer
            sp.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "tiny-llava",
                               "gen_ai.input.messages": json.dumps(user)})
    provider.shutdown()
    return list(memory.get_finished_spans())


def _counter(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _samples(engine) -> dict[str, Sample]:
    with session_factory(engine)() as s:
        return {r.id: r for r in s.scalars(select(Sample).where(Sample.source == "otlp"))}


def test_sdk_exporter_spans_of_both_conventions_become_samples(api, engine) -> None:
    spans = _vlm_calls()
    before = {o: _counter("vlmwatch_api_otlp_spans_total", outcome=o) for o in ("accepted", "duplicate", "dropped", "ignored")}
    exporter = OTLPSpanExporter(endpoint=f"{api.base_url}/v1/traces", headers=AUTH, timeout=10)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    got = _samples(engine)
    ids = {f"otel-{sp.context.trace_id:032x}-{sp.context.span_id:016x}": sp for sp in spans}
    assert set(got) <= set(ids) and len(got) == 3
    by_rid = {s.response_id: s for s in got.values()}
    assert set(by_rid) == {"chatcmpl-genai", "chatcmpl-event", "chatcmpl-oi"}
    genai, event, oi = by_rid["chatcmpl-genai"], by_rid["chatcmpl-event"], by_rid["chatcmpl-oi"]
    assert (genai.model, genai.prompt, genai.answer) == ("tiny-llava", "Is there a dog?", "yes")
    assert genai.image_sha256 == hashlib.sha256(png(1)).hexdigest()  # the blob's bytes, checked and stored
    assert genai.meta["otel"]["service"] == "vqa-app" and genai.meta["temperature"] == 0.0
    assert genai.ts.timestamp() == pytest.approx(ids[genai.id].start_time / 1e9, abs=1e-3)  # the span's start
    assert (event.prompt, event.answer) == ("Is there a cat?", "no")
    assert (oi.prompt, oi.answer, oi.meta["otel"]["convention"]) == ("Is there a bird?", "yes", "openinference")
    assert oi.image_sha256 == hashlib.sha256(png(3)).hexdigest()
    with session_factory(engine)() as s:
        assert s.get(Image, event.image_sha256).url == "https://img.example/2.png"  # fetched later by the daemon
    after = {o: _counter("vlmwatch_api_otlp_spans_total", outcome=o) for o in before}
    assert {o: after[o] - before[o] for o in before} == {"accepted": 3, "duplicate": 0, "dropped": 2, "ignored": 1}
    # the exporter retries a batch it could not confirm: the same spans again store nothing new
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert set(_samples(engine)) == set(got)
    assert _counter("vlmwatch_api_otlp_spans_total", outcome="duplicate") - before["duplicate"] == 3
    # gzip, as OTEL_EXPORTER_OTLP_COMPRESSION=gzip sends it
    gz = OTLPSpanExporter(endpoint=f"{api.base_url}/v1/traces", headers=AUTH, compression=Compression.Gzip)
    assert gz.export(_vlm_calls()) == SpanExportResult.SUCCESS
    assert len(_samples(engine)) == 6


def test_writes_need_the_token_like_v1_samples(api, engine) -> None:
    spans = _vlm_calls()
    assert OTLPSpanExporter(endpoint=f"{api.base_url}/v1/traces", timeout=5).export(spans) == SpanExportResult.FAILURE
    wrong = {"Authorization": "Bearer nope"}
    assert OTLPSpanExporter(endpoint=f"{api.base_url}/v1/traces", headers=wrong, timeout=5).export(spans) == SpanExportResult.FAILURE
    assert _samples(engine) == {}
    r = api.post("/v1/traces", content=encode_spans(spans).SerializeToString(),
                 headers={"content-type": "application/x-protobuf"})
    assert r.status_code == 401


def test_partial_success_names_the_dropped_spans_protobuf(api, engine) -> None:
    spans = _vlm_calls()
    r = api.post("/v1/traces", content=encode_spans(spans).SerializeToString(),
                 headers={"content-type": "application/x-protobuf", **AUTH})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 2
    msg = resp.partial_success.error_message
    assert "2 GenAI span(s) dropped: no_answer=1, no_image=1" in msg and "1 span(s) ignored" in msg
    assert "0 images in the conversation" in msg and len(_samples(engine)) == 3


def _otlp_json(spans) -> dict:
    """The SDK's encoding as OTLP/JSON: protobuf's JSON mapping, with trace and span ids in hex (the spec)."""
    body = json_format.MessageToDict(encode_spans(spans))
    for rs in body["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex()
    return body


def test_otlp_json_from_the_sdk_and_structured_attribute_values(api, engine) -> None:
    r = api.post("/v1/traces", json=_otlp_json(_vlm_calls()), headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json()["partialSuccess"]["rejectedSpans"] == "2"  # int64 as a string, as OTLP/JSON writes it
    assert len(_samples(engine)) == 3
    # gen_ai.input.messages in structured form (an AnyValue array of kvlists), as SDKs with complex attributes send it
    def kv(key, value):
        return {"key": key, "value": value}

    def s(text):
        return {"stringValue": text}

    part_text = {"kvlistValue": {"values": [kv("type", s("text")), kv("content", s("Is there a fox?"))]}}
    part_blob = {"kvlistValue": {"values": [kv("type", s("blob")), kv("modality", s("image")),
                                            kv("mime_type", s("image/png")),
                                            kv("content", {"bytesValue": base64.b64encode(png(9)).decode()})]}}
    msg = {"kvlistValue": {"values": [kv("role", s("user")), kv("parts", {"arrayValue": {"values": [part_text, part_blob]}})]}}
    answer = {"kvlistValue": {"values": [kv("role", s("assistant")), kv("parts", {"arrayValue": {"values": [
        {"kvlistValue": {"values": [kv("type", s("text")), kv("content", s("no"))]}}]}})]}}
    body = {"resourceSpans": [{"resource": {"attributes": [kv("service.name", s("java-app"))]}, "scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "chat tiny-llava",
        "kind": 3, "startTimeUnixNano": "1764000000000000000", "endTimeUnixNano": "1764000000500000000",
        "attributes": [kv("gen_ai.operation.name", s("chat")), kv("gen_ai.request.model", s("tiny-llava")),
                       kv("gen_ai.input.messages", {"arrayValue": {"values": [msg]}}),
                       kv("gen_ai.output.messages", {"arrayValue": {"values": [answer]}})]}]}]}]}
    r = api.post("/v1/traces", content=json.dumps(body), headers={"content-type": "application/json", **AUTH})
    assert r.status_code == 200 and r.json() == {}  # all accepted: no partial_success
    smp = _samples(engine)["otel-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174"]
    assert (smp.prompt, smp.answer, smp.image_sha256) == ("Is there a fox?", "no", hashlib.sha256(png(9)).hexdigest())
    assert smp.ts.isoformat().startswith("2025-11-24T16:00:00")


def test_bodies_that_are_not_an_otlp_export(api) -> None:
    proto = {"content-type": "application/x-protobuf", **AUTH}
    r = api.post("/v1/traces", content=b"\xff\xfe not protobuf", headers=proto)
    assert r.status_code == 400 and r.headers["content-type"] == "application/x-protobuf"
    from google.rpc.status_pb2 import Status

    assert "not an OTLP ExportTraceServiceRequest" in Status.FromString(r.content).message
    r = api.post("/v1/traces", content=b"{broken", headers={"content-type": "application/json", **AUTH})
    assert r.status_code == 400 and "not an OTLP" in r.json()["error"]
    r = api.post("/v1/traces", json=[1, 2], headers=AUTH)
    assert r.status_code == 400 and "not an OTLP" in r.json()["error"]
    r = api.post("/v1/traces", content=b"x", headers={"content-type": "text/plain", **AUTH})
    assert r.status_code == 415 and "application/x-protobuf" in r.json()["error"]
    r = api.post("/v1/traces", content=b"not gzip", headers={**proto, "content-encoding": "gzip"})
    assert r.status_code == 400


def test_body_limit_as_sent_and_once_inflated(engine, monkeypatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "otlp-secret")
    proto = {"content-type": "application/x-protobuf", **AUTH}
    for c in serve_api(engine, token_env=TOKEN_ENV, max_body_bytes=1000):
        big = encode_spans(_vlm_calls()).SerializeToString()
        assert len(big) > 1000
        r = c.post("/v1/traces", content=big, headers=proto)
        assert r.status_code == 413  # api.max_body_bytes, the app's write guard
        bomb = gzip.compress(b"\0" * 5000)  # small on the wire, over the limit once inflated
        assert len(bomb) < 1000
        r = c.post("/v1/traces", content=bomb, headers={**proto, "content-encoding": "gzip"})
        assert r.status_code == 413 and b"decompressed body over api.max_body_bytes" in r.content
        small = gzip.compress(encode_spans(_vlm_calls()[:1]).SerializeToString())
        assert c.post("/v1/traces", content=small, headers={**proto, "content-encoding": "gzip"}).status_code == 200
