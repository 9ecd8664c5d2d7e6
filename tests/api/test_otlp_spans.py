"""Each tracing convention's layout of one VLM call becomes the same sample; unusable spans say why."""

from __future__ import annotations

import base64
import json

import pytest

from collectors.sample import DropSample
from monitor.api.otlp_spans import NotGenAI, Span, span_to_sample
from tests.daemon.helpers import png

B64 = base64.b64encode(png(3)).decode()
DATA_URL = "data:image/png;base64," + B64
TRACE, SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


def _span(attrs: dict, events=(), **kw) -> Span:
    return Span(trace_id=TRACE, span_id=SPAN, name=kw.pop("name", "chat m"), start_ns=1_764_000_000_000_000_000,
                attributes=attrs, events=list(events), resource=kw.pop("resource", {"service.name": "vqa"}))


def _genai(inputs, outputs, **extra) -> dict:
    return {"gen_ai.operation.name": "chat", "gen_ai.request.model": "tiny-llava", "gen_ai.response.id": "chatcmpl-9",
            "gen_ai.input.messages": inputs, "gen_ai.output.messages": outputs, **extra}


USER = [{"role": "user", "parts": [{"type": "text", "content": "Is there a dog?"},
                                   {"type": "blob", "modality": "image", "mime_type": "image/png", "content": B64}]}]
ANSWER = [{"role": "assistant", "parts": [{"type": "text", "content": "yes"}], "finish_reason": "stop"}]


def test_genai_attributes_as_json_strings_and_structured_agree() -> None:
    as_json = span_to_sample(_span(_genai(json.dumps(USER), json.dumps(ANSWER), **{"gen_ai.request.temperature": 0.0})))
    structured = span_to_sample(_span(_genai(USER, ANSWER)))
    assert as_json.id == structured.id == f"otel-{TRACE}-{SPAN}"
    assert (as_json.model, as_json.prompt, as_json.answer, as_json.response_id) == ("tiny-llava", "Is there a dog?", "yes",
                                                                                     "chatcmpl-9")
    assert as_json.image == structured.image == DATA_URL
    assert as_json.meta["temperature"] == 0.0 and as_json.meta["otel"] == {
        "trace_id": TRACE, "span_id": SPAN, "span_name": "chat m", "convention": "gen_ai", "service": "vqa"}
    assert as_json.ts is not None and as_json.ts.year == 2025


def test_genai_event_form_system_instructions_uri_and_skipped_parts() -> None:
    inputs = [{"role": "user", "parts": [{"type": "uri", "modality": "image", "uri": "https://img.example/cat.jpg"},
                                         {"type": "text", "content": "What animal?"}]},
              {"role": "assistant", "parts": [{"type": "tool_call", "name": "lookup", "arguments": {}}]},
              {"role": "tool", "parts": [{"type": "tool_call_response", "response": "cat"}]},
              {"role": "user", "parts": [{"type": "text", "content": "Answer in one word."}]}]
    event = ("gen_ai.client.inference.operation.details",
             {"gen_ai.input.messages": inputs, "gen_ai.output.messages": ANSWER,
              "gen_ai.system_instructions": [{"type": "text", "content": "Be brief."}]})
    smp = span_to_sample(_span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}, [event]))
    assert smp.image == "https://img.example/cat.jpg"
    assert smp.prompt == "Answer in one word."  # the last user message, as the proxy takes it
    assert smp.meta["system"] == "Be brief." and smp.response_id is None


def test_indexed_genai_attributes_openllmetry() -> None:
    parts = [{"type": "text", "text": "Is there a dog?"}, {"type": "image_url", "image_url": {"url": DATA_URL}}]
    smp = span_to_sample(_span({"gen_ai.system": "openai", "gen_ai.request.model": "tiny-llava",
                                "gen_ai.response.id": "chatcmpl-2", "gen_ai.prompt.0.role": "system",
                                "gen_ai.prompt.0.content": "You are a VQA model.", "gen_ai.prompt.1.role": "user",
                                "gen_ai.prompt.1.content": json.dumps(parts), "gen_ai.completion.0.role": "assistant",
                                "gen_ai.completion.0.content": "no"}))
    assert (smp.prompt, smp.answer, smp.image, smp.response_id) == ("Is there a dog?", "no", DATA_URL, "chatcmpl-2")
    assert smp.meta["otel"]["convention"] == "gen_ai_indexed" and smp.meta["system"] == "You are a VQA model."


def test_openinference_layout_with_provider_json_for_the_id_and_logprobs() -> None:
    provider = {"id": "chatcmpl-oi", "choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"},
                                                   "logprobs": {"content": [{"token": "yes", "logprob": -0.1}]}}]}
    attrs = {"openinference.span.kind": "LLM", "llm.model_name": "tiny-llava",
             "llm.input_messages.0.message.role": "user",
             "llm.input_messages.0.message.contents.0.message_content.type": "text",
             "llm.input_messages.0.message.contents.0.message_content.text": "Is there a dog?",
             "llm.input_messages.0.message.contents.1.message_content.type": "image",
             "llm.input_messages.0.message.contents.1.message_content.image.image.url": DATA_URL,
             "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "yes",
             "output.value": json.dumps(provider), "output.mime_type": "application/json"}
    smp = span_to_sample(_span(attrs))
    assert (smp.model, smp.prompt, smp.answer, smp.image) == ("tiny-llava", "Is there a dog?", "yes", DATA_URL)
    assert smp.response_id == "chatcmpl-oi" and smp.meta["answer_logprobs"] == [-0.1]
    assert smp.meta["otel"]["convention"] == "openinference"
    # no output messages recorded: the answer comes from the provider's JSON
    del attrs["llm.output_messages.0.message.content"], attrs["llm.output_messages.0.message.role"]
    assert span_to_sample(_span(attrs)).answer == "yes"


@pytest.mark.parametrize("attrs", [
    {"http.request.method": "POST", "url.full": "http://x/v1/chat/completions"},  # not GenAI at all
    {"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "m", "gen_ai.input.messages": USER},  # agent
    {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "m"},
    {"openinference.span.kind": "CHAIN", "input.value": "q", "output.value": "a"},
])
def test_spans_that_are_no_llm_call_are_ignored(attrs) -> None:
    with pytest.raises(NotGenAI):
        span_to_sample(_span(attrs))


@pytest.mark.parametrize("change,reason,detail", [
    (lambda a: a.pop("gen_ai.request.model"), "no_model", "gen_ai.request.model"),
    (lambda a: a.pop("gen_ai.input.messages"), "no_prompt", "user message"),
    (lambda a: a.pop("gen_ai.output.messages"), "no_answer", "output"),
    (lambda a: a.update({"gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": " "}]}]}),
     "no_answer", "output"),
    (lambda a: a.update({"gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]}),
     "no_image", "0 images"),
    (lambda a: a.update({"gen_ai.input.messages": [{"role": "user", "parts": [*USER[0]["parts"], USER[0]["parts"][1]]}]}),
     "no_image", "2 images"),
    (lambda a: a.update({"gen_ai.input.messages": [{"role": "user", "parts": [
        {"type": "blob", "modality": "audio", "mime_type": "audio/wav", "content": "AAAA"}]}]}), "unsupported_content", "audio"),
    (lambda a: a.update({"gen_ai.input.messages": [{"role": "user", "parts": [
        {"type": "file", "modality": "image", "file_id": "file-1"}]}]}), "unsupported_content", "file ids"),
    (lambda a: a.update({"gen_ai.input.messages": "not json"}), "unsupported_content", "not a list"),
])
def test_unusable_genai_spans_say_why(change, reason, detail) -> None:
    attrs = _genai(USER, ANSWER)
    change(attrs)
    with pytest.raises(DropSample) as e:
        span_to_sample(_span(attrs))
    assert e.value.reason == reason and detail in str(e.value), str(e.value)


def test_blob_bytes_and_a_missing_mime_type() -> None:
    user = [{"role": "user", "parts": [{"type": "text", "content": "q"},
                                       {"type": "blob", "modality": "image", "content": png(3)}]}]
    assert span_to_sample(_span(_genai(user, ANSWER))).image == DATA_URL  # bytes (structured form) -> base64
