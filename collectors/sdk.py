"""SDK hooks: record samples from in-process calls without changing them.

- :func:`watch_openai` wraps ``client.chat.completions.create`` of an ``openai.OpenAI`` or
  ``openai.AsyncOpenAI`` client (streams are teed chunk by chunk).
- :func:`watch_vlm` decorates a function that runs a VLM in process (e.g. a transformers
  ``generate`` call) and takes an image and a prompt and returns the answer.

The wrapped call runs first and unguarded: its return value is returned as is, its exception
propagates untouched (nothing of ours is on its traceback path), and the only work added on the
caller's thread is a ``put_nowait`` of references. Parsing, hashing (the deterministic sampling
decision), image encoding and the spool write run on the collector's worker thread.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import logging
import os
import time
import zlib
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from collectors.exchange import (
    answer_from_chunks,
    answer_from_json,
    check_image_bytes,
    load_image_ref,
    parse_chat_request,
    with_answer_meta,
)
from collectors.metrics import CollectorMetrics
from collectors.pipeline import Pipeline, Redactor
from collectors.sample import CollectedImage, CollectedSample, DropSample, new_sample_id
from collectors.sampling import DEFAULT_ROUTE, SamplingPolicy, hash_fraction
from collectors.spool import SpoolWriter
from storage.failopen import swallowed

__all__ = ["SdkCollector", "watch_openai", "watch_vlm"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class SdkCollector:
    """One in-process collector: a bounded queue, a worker thread, a spool lane.

    Made before a fork (gunicorn ``--preload``), it keeps working in every child: the child gets
    a worker of its own and writes its own lane, ``<lane>-<pid>`` (``sdk-<pid>`` by default).
    """

    def __init__(
        self,
        spool_dir: str | Path,
        *,
        lane: str | None = None,
        policy: SamplingPolicy | None = None,
        max_bytes: int = 1_000_000_000,
        queue_size: int = 1000,
        redact: Redactor | None = None,
        max_image_bytes: int = 20_000_000,
    ) -> None:
        self.policy = policy or SamplingPolicy()
        self.max_image_bytes = max_image_bytes
        self.metrics = CollectorMetrics("sdk")
        self._spool_dir, self._lane, self._max_bytes = spool_dir, lane, max_bytes
        self.writer = self._open_writer(lane or f"sdk-{os.getpid()}")
        self.pipeline = Pipeline(build=self._build, sink=self.writer, metrics=self.metrics,
                                 queue_size=queue_size, redact=redact, name="sdk", after_fork=self._writer_after_fork)

    def _open_writer(self, lane: str) -> SpoolWriter:
        return SpoolWriter(self._spool_dir, lane, max_bytes=self._max_bytes,
                           on_drop=lambda n: self.metrics.drop("spool_full", n))

    def _writer_after_fork(self) -> SpoolWriter:
        """A forked child writes a lane of its own (``<lane>-<pid>``, or ``sdk-<pid>``): one writer per lane."""
        self.writer.close()  # the child's copies of the parent's descriptors; the parent's lock stays
        pid = os.getpid()
        self.writer = self._open_writer(f"{self._lane[:80]}-{pid}" if self._lane else f"sdk-{pid}")
        return self.writer

    def offer(self, item: tuple[Any, ...]) -> None:
        self.pipeline.offer(item)

    def flush(self, timeout: float = 5.0) -> bool:
        return self.pipeline.flush(timeout)

    def close(self) -> None:
        self.pipeline.close()
        self.writer.close()

    # worker side ---------------------------------------------------------------------------------
    def _build(self, item: tuple[Any, ...]) -> CollectedSample:
        kind = item[0]
        if kind == "openai":
            return self._build_openai(*item[1:])
        return self._build_vlm(*item[1:])

    def _build_openai(self, kwargs: dict[str, Any], result: Any, chunks: list[Any] | None, t0: float,
                      ms: float) -> CollectedSample:
        raw = json.dumps(kwargs, sort_keys=True, default=str).encode()
        fraction = hash_fraction(zlib.crc32(raw), len(raw))
        model = kwargs.get("model")
        if isinstance(model, str) and not self.policy.keep(fraction, model, DEFAULT_ROUTE):
            raise DropSample("sampled_out")
        body = json.loads(raw)  # plain JSON types, whatever the caller passed (TypedDicts, objects)
        model, prompt, image_ref, meta = parse_chat_request(body)
        if chunks is not None:
            ans = answer_from_chunks([_plain(c) for c in chunks])
        else:
            ans = answer_from_json(_plain(result))
        image = load_image_ref(image_ref, self.max_image_bytes)
        meta["latency_ms"] = round(ms, 3)
        return CollectedSample(id=new_sample_id("sdk"), source="sdk", ts=datetime.fromtimestamp(t0, timezone.utc),
                               model=model, route=DEFAULT_ROUTE, prompt=prompt, answer=ans.text,
                               response_id=ans.response_id, image=image, meta=with_answer_meta(meta, ans))

    def _image(self, image: Any) -> CollectedImage:
        if isinstance(image, (bytes, bytearray)):
            return check_image_bytes(bytes(image), self.max_image_bytes)
        if isinstance(image, (str, Path)):
            text = str(image)
            if text.startswith(("data:", "http://", "https://")):
                return load_image_ref(text, self.max_image_bytes)
            try:
                return check_image_bytes(Path(text).read_bytes(), self.max_image_bytes)
            except OSError as e:
                raise DropSample("bad_image", f"cannot read image file {text}: {e}") from None
        if hasattr(image, "save") and hasattr(image, "size"):  # a PIL image
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            return check_image_bytes(buf.getvalue(), self.max_image_bytes)
        raise DropSample("unsupported_content", f"image of type {type(image).__name__}")

    def _build_vlm(self, model: str, image: Any, prompt: Any, answer: Any, t0: float, ms: float) -> CollectedSample:
        if not isinstance(prompt, str):
            raise DropSample("unsupported_content", "prompt is not a string")
        if isinstance(answer, list) and answer and isinstance(answer[0], dict):  # transformers pipeline output
            answer = answer[0].get("generated_text")
            if isinstance(answer, list) and answer and isinstance(answer[-1], dict):  # chat-format output
                answer = answer[-1].get("content")
        if not isinstance(answer, str):
            raise DropSample("unsupported_content", f"answer of type {type(answer).__name__}")
        img = self._image(image)
        key = (img.sha256 or img.url or "").encode() + b"\0" + prompt.encode()
        if not self.policy.keep(hash_fraction(zlib.crc32(key), len(key)), model, DEFAULT_ROUTE):
            raise DropSample("sampled_out")
        return CollectedSample(id=new_sample_id("sdk"), source="sdk", ts=datetime.fromtimestamp(t0, timezone.utc),
                               model=model, route=DEFAULT_ROUTE, prompt=prompt, answer=answer, image=img,
                               meta={"latency_ms": round(ms, 3)})


def _plain(obj: Any) -> Any:
    """An openai response object (pydantic) as the plain dict it was parsed from."""
    return obj.model_dump() if hasattr(obj, "model_dump") else obj


def _offer(collector: SdkCollector, item: tuple[Any, ...]) -> None:
    with swallowed("sdk hook", log):  # never the caller's problem
        collector.offer(item)


def _tee_stream(collector: SdkCollector, stream: Any, kwargs: dict[str, Any], t0: float) -> None:
    inner = stream._iterator
    chunks: list[Any] = []

    if inspect.isasyncgen(inner):
        async def atee() -> Any:
            async for chunk in inner:
                chunks.append(chunk)
                yield chunk
            _offer(collector, ("openai", kwargs, None, chunks, t0, (time.time() - t0) * 1e3))

        stream._iterator = atee()
    else:
        def tee() -> Any:
            yield from _appending(inner, chunks)
            _offer(collector, ("openai", kwargs, None, chunks, t0, (time.time() - t0) * 1e3))

        stream._iterator = tee()


def _appending(inner: Any, chunks: list[Any]) -> Any:
    for chunk in inner:
        chunks.append(chunk)
        yield chunk


def _after_openai(collector: SdkCollector, kwargs: dict[str, Any], result: Any, t0: float) -> None:
    with swallowed("openai hook", log):
        model = kwargs.get("model")
        if isinstance(model, str) and collector.policy.rate(model, DEFAULT_ROUTE) <= 0.0:
            collector.metrics.drop("sampled_out")
            return
        if hasattr(result, "_iterator"):
            _tee_stream(collector, result, dict(kwargs), t0)
        else:
            collector.offer(("openai", dict(kwargs), result, None, t0, (time.time() - t0) * 1e3))


def watch_openai(client: Any, collector: SdkCollector) -> Any:
    """Record ``chat.completions.create`` calls of ``client`` (patched in place; returns ``client``)."""
    completions = client.chat.completions
    original = completions.create
    if getattr(original, "__vlmwatch__", False):
        return client

    async def finish(pending: Any, kwargs: dict[str, Any], t0: float) -> Any:
        result = await pending
        _after_openai(collector, kwargs, result, t0)
        return result

    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        result = original(*args, **kwargs)
        if inspect.isawaitable(result):  # AsyncOpenAI: record once the caller awaits it
            return finish(result, kwargs, t0)
        _after_openai(collector, kwargs, result, t0)
        return result

    create.__vlmwatch__ = True  # type: ignore[attr-defined]
    completions.create = create
    return client


def watch_vlm(
    collector: SdkCollector, *, model: str, image_arg: str = "image", prompt_arg: str = "prompt"
) -> Callable[[F], F]:
    """Decorate ``fn(image, prompt, ...) -> answer`` (a str, or a transformers pipeline's output).

    ``image`` may be a PIL image, image bytes, a path, a data URL or an http(s) URL.
    """

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)
        if image_arg not in sig.parameters or prompt_arg not in sig.parameters:
            raise TypeError(f"{fn.__qualname__} has no parameters {image_arg!r} and {prompt_arg!r}")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.time()
            p0 = time.perf_counter()
            result = fn(*args, **kwargs)
            ms = (time.perf_counter() - p0) * 1e3
            with swallowed("vlm hook", log):
                bound = sig.bind_partial(*args, **kwargs)
                item = ("vlm", model, bound.arguments.get(image_arg), bound.arguments.get(prompt_arg), result, t0, ms)
                collector.offer(item)
            return result

        return wrapper  # type: ignore[return-value]

    return deco
