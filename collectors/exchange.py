"""Turn one OpenAI Chat Completions exchange into a :class:`CollectedSample` (off the request path).

Every way a sample can be unusable raises :class:`DropSample` with a counted reason: malformed
JSON (``bad_json``), an answer that cannot be read (``bad_response``), content we do not handle
(``unsupported_content``), no image or several (``no_image``), corrupt base64 or bytes that are
not an image (``bad_image``), an oversized body or image (``too_large``), a non-2xx answer
(``upstream_error``).
"""

from __future__ import annotations

import binascii
import gzip
import json
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from collectors.sample import CollectedImage, CollectedSample, DropSample, new_sample_id
from collectors.sampling import DEFAULT_ROUTE, SamplingPolicy

_B64_SLICE = 16384  # characters per decode call (a multiple of 4)

__all__ = [
    "RawExchange",
    "build_sample",
    "parse_chat_request",
    "Answer",
    "token_logprobs",
    "answer_from_json",
    "answer_from_chunks",
    "answer_from_sse",
    "with_answer_meta",
    "load_image_ref",
    "check_image_bytes",
]


@dataclass
class RawExchange:
    """What the request path hands to the worker: bytes as seen on the wire, nothing parsed."""

    ts: datetime
    route: str
    fraction: float  # hash_fraction of the request body
    request_body: bytes
    status: int = 0
    response_body: bytes = b""
    content_type: str = ""
    content_encoding: str = ""
    too_large: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


def _text_of(content: Any) -> tuple[list[str], list[str]]:
    """Text parts and image references of one message's ``content``."""
    if content is None:
        return [], []
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list):
        raise DropSample("unsupported_content", f"message content is {type(content).__name__}")
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            raise DropSample("unsupported_content", "content part is not an object")
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise DropSample("unsupported_content", "image_url without a url string")
            images.append(url)
        else:
            raise DropSample("unsupported_content", f"content part type {kind!r}")
    return texts, images


def parse_chat_request(body: Any) -> tuple[str, str, str, dict[str, Any]]:
    """``(model, prompt, image_ref, meta)`` of a chat request with exactly one image.

    The prompt is the text of the last user message; the image is the single image of the
    conversation (the monitor re-runs one image and one prompt).
    """
    if not isinstance(body, dict):
        raise DropSample("bad_json", "request body is not a JSON object")
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not model:
        raise DropSample("unsupported_content", "request has no model name")
    if not isinstance(messages, list) or not messages:
        raise DropSample("unsupported_content", "request has no messages")
    images: list[str] = []
    prompt: str | None = None
    system: list[str] = []
    for msg in messages:
        if not isinstance(msg, dict):
            raise DropSample("unsupported_content", "message is not an object")
        texts, imgs = _text_of(msg.get("content"))
        images.extend(imgs)
        role = msg.get("role")
        if role == "user":
            prompt = "\n".join(texts)
        elif role == "system":
            system.extend(texts)
    if prompt is None:
        raise DropSample("unsupported_content", "no user message")
    if len(images) != 1:
        raise DropSample("no_image", f"{len(images)} images in the conversation (need exactly 1)")
    meta: dict[str, Any] = {"n_messages": len(messages), "stream": bool(body.get("stream", False))}
    if system:
        meta["system"] = "\n".join(system)
    for key in ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed"):
        if key in body:
            meta[key] = body[key]
    return model, prompt, images[0], meta


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if content is None:
        return ""
    raise DropSample("bad_response", f"answer content is {type(content).__name__}")


@dataclass(frozen=True)
class Answer:
    """What the monitor keeps of a chat completion: the text of choice 0, the response id, the
    served tokens' log-probabilities when the server returned them (``logprobs: true``), and the
    server's ``system_fingerprint`` when it sent one (the served-model check's cheap hint)."""

    text: str
    response_id: str | None
    logprobs: list[float] | None = None
    system_fingerprint: str | None = None


def token_logprobs(logprobs: Any) -> list[float] | None:
    """``[entry.logprob for entry in logprobs.content]`` of an OpenAI ``logprobs`` object.

    ``None`` when absent or unusable (not a list, a non-numeric or non-finite value, a positive
    log-probability): the answer is still a good sample, it just brings no free confidence signal.
    """
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if not isinstance(content, list):
        return None
    out: list[float] = []
    for entry in content:
        lp = entry.get("logprob") if isinstance(entry, dict) else None
        if isinstance(lp, bool) or not isinstance(lp, (int, float)) or not math.isfinite(lp) or lp > 1e-6:
            return None
        out.append(float(lp))
    return out


def answer_from_json(resp: Any) -> Answer:
    """The :class:`Answer` of a non-streamed chat completion."""
    try:
        choice = resp["choices"][0]
        text = _content_text(choice["message"].get("content"))
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise DropSample("bad_response", f"no choices[0].message in the answer ({e!r})") from None
    rid = resp.get("id")
    lps = token_logprobs(choice.get("logprobs"))
    return Answer(text, rid if isinstance(rid, str) else None, lps or None, _fingerprint(resp))


def _fingerprint(obj: dict[str, Any]) -> str | None:
    fp = obj.get("system_fingerprint")
    return fp if isinstance(fp, str) and fp else None


def answer_from_chunks(chunks: Iterable[Any]) -> Answer:
    """Reassemble a streamed answer from its ``chat.completion.chunk`` objects (as dicts).

    Log-probabilities are kept only if every chunk that adds text to choice 0 carries them.
    """
    parts: list[str] = []
    lps: list[float] | None = []
    rid: str | None = None
    fingerprint: str | None = None
    seen = False
    for chunk in chunks:
        if not isinstance(chunk, dict):
            raise DropSample("bad_response", "an SSE event is not an object")
        seen = True
        if rid is None and isinstance(chunk.get("id"), str):
            rid = chunk["id"]
        fingerprint = fingerprint or _fingerprint(chunk)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            piece = _content_text(delta.get("content")) if isinstance(delta, dict) else ""
            lp = choice.get("logprobs")
            if lps is not None and lp is not None:
                more = token_logprobs(lp)
                lps = None if more is None else lps + more
            elif piece and lp is None:
                lps = None  # text without its log-probabilities: the sequence would be incomplete
            parts.append(piece)
    if not seen:
        raise DropSample("bad_response", "stream had no data events")
    return Answer("".join(parts), rid, lps or None, fingerprint)


def with_answer_meta(meta: dict[str, Any], ans: Answer) -> dict[str, Any]:
    """``meta`` plus ``answer_logprobs`` when the answer brought them (the probe scorer's free
    ``answer_prob`` signal, without them it needs ``scoring.full_pass``; and the served-model
    check's evidence) and the server's ``system_fingerprint`` when it sent one."""
    extra: dict[str, Any] = {}
    if ans.logprobs is not None:
        extra["answer_logprobs"] = ans.logprobs
    if ans.system_fingerprint is not None:
        extra["system_fingerprint"] = ans.system_fingerprint
    return {**meta, **extra} if extra else meta


def answer_from_sse(body: bytes) -> Answer:
    """Reassemble a streamed answer from the SSE body (``data: {chunk}`` events)."""
    chunks = []
    for line in body.splitlines():
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]" or not payload:
            continue
        try:
            chunks.append(json.loads(payload))
        except ValueError:
            raise DropSample("bad_response", "an SSE event is not JSON") from None
    return answer_from_chunks(chunks)


def check_image_bytes(data: bytes, max_bytes: int) -> CollectedImage:
    """Verify that ``data`` is a decodable image (storage's own check); hash, size, format, dimensions."""
    from storage.images import ImageError, inspect_image

    if len(data) > max_bytes:
        raise DropSample("too_large", f"image of {len(data)} bytes (limit {max_bytes})")
    try:
        info = inspect_image(data, max_bytes)
    except ImageError as e:
        raise DropSample("bad_image", str(e)) from None
    return CollectedImage(
        sha256=info.sha256, size=info.size, format=info.format, width=info.width, height=info.height, data=data
    )


def load_image_ref(ref: str, max_bytes: int) -> CollectedImage:
    """A data URL is decoded and checked; an http(s) URL is only recorded (fetched later)."""
    if ref.startswith(("http://", "https://")):
        return CollectedImage(url=ref)
    if not ref.startswith("data:"):
        raise DropSample("unsupported_content", "image is neither a data URL nor an http(s) URL")
    header, sep, payload = ref.partition(",")
    if not sep or not header.endswith(";base64"):
        raise DropSample("unsupported_content", "data URL is not base64-encoded")
    if not header[5:].startswith("image/"):
        raise DropSample("unsupported_content", f"data URL type {header[5:-7]!r} is not an image")
    if len(payload) * 3 // 4 > max_bytes:
        raise DropSample("too_large", f"image data URL of {len(payload)} characters (limit {max_bytes} bytes)")
    return check_image_bytes(_b64decode(payload), max_bytes)


def _b64decode(payload: str) -> bytes:
    """Strict base64 decoding in slices: the worker releases the GIL between them, so a 100 KB
    image never holds the proxy's event loop for the whole decode."""
    if len(payload) % 4 or "=" in payload[:-2]:
        raise DropSample("bad_image", "corrupt base64 (bad length or padding)")
    step = _B64_SLICE
    try:
        if len(payload) <= step:
            return binascii.a2b_base64(payload, strict_mode=True)
        return b"".join(
            binascii.a2b_base64(payload[i : i + step], strict_mode=True) for i in range(0, len(payload), step)
        )
    except (binascii.Error, ValueError) as e:
        raise DropSample("bad_image", f"corrupt base64 ({e})") from None


def _decode_body(raw: RawExchange) -> bytes:
    enc = raw.content_encoding.lower().strip()
    if not enc or enc == "identity":
        return raw.response_body
    try:
        if enc == "gzip":
            return gzip.decompress(raw.response_body)
        if enc == "deflate":
            return zlib.decompress(raw.response_body)
    except (OSError, zlib.error, EOFError) as e:
        raise DropSample("bad_response", f"cannot decode {enc} answer ({e})") from None
    raise DropSample("unsupported_content", f"answer content-encoding {enc!r}")


def build_sample(
    raw: RawExchange, policy: SamplingPolicy, *, max_image_bytes: int, source: str = "proxy"
) -> CollectedSample:
    """Finish the sampling decision and build the sample, or raise :class:`DropSample`."""
    if raw.too_large:
        raise DropSample("too_large", "request or answer body over the proxy's max_body_bytes")
    try:
        body = json.loads(raw.request_body)
    except (ValueError, UnicodeDecodeError):
        raise DropSample("bad_json", "request body is not JSON") from None
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str) and not policy.keep(raw.fraction, model, raw.route or DEFAULT_ROUTE):
        raise DropSample("sampled_out")
    if not 200 <= raw.status < 300:
        raise DropSample("upstream_error", f"upstream answered {raw.status}")
    model, prompt, image_ref, meta = parse_chat_request(body)
    resp = _decode_body(raw)
    if "text/event-stream" in raw.content_type.lower() or resp.lstrip().startswith(b"data:"):
        ans = answer_from_sse(resp)
    else:
        try:
            ans = answer_from_json(json.loads(resp))
        except (ValueError, UnicodeDecodeError):
            raise DropSample("bad_response", "answer is not JSON") from None
    image = load_image_ref(image_ref, max_image_bytes)
    meta = with_answer_meta({**meta, **raw.meta}, ans)
    return CollectedSample(
        id=new_sample_id(source),
        source=source,
        ts=raw.ts,
        model=model,
        route=raw.route or DEFAULT_ROUTE,
        prompt=prompt,
        answer=ans.text,
        response_id=ans.response_id,
        image=image,
        meta=meta,
    )
