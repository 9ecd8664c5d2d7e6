"""Bounded hand-off from a request path to a worker thread that builds, redacts and spools samples.

``offer`` never blocks: ``put_nowait`` into a bounded queue, a counted ``queue_full`` drop when it
is full. The worker turns each item into a :class:`CollectedSample` (``build`` raises
:class:`DropSample` with a reason), runs the optional redaction hook, and appends the batch to the
spool with one fsync. Nothing here may raise into the caller.

Fork-safe (gunicorn ``--preload``, multiprocessing's fork): a forked child inherits no worker thread,
so the pipeline starts a fresh queue and worker in the child (``os.register_at_fork``, and a process
id check in :meth:`Pipeline.offer` for forks that bypass Python), as sentry-python's and
OpenTelemetry's background workers do. Items queued in the parent at the fork stay the parent's.
``after_fork`` gives the child its own sink (a spool lane has one writer).
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from collectors.metrics import CollectorMetrics
from collectors.sample import CollectedSample, DropSample
from storage.failopen import swallowed

__all__ = ["Pipeline", "SampleSink", "Redactor", "load_redactor"]

log = logging.getLogger(__name__)

Redactor = Callable[[CollectedSample], "CollectedSample | None"]
_STOP = object()


class SampleSink(Protocol):
    def append(self, payloads: list[bytes]) -> int: ...


def load_redactor(spec: str | None) -> Redactor | None:
    """Import a redaction hook from ``"package.module:function"`` (None or "" = no hook)."""
    if not spec:
        return None
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"redaction hook {spec!r} must look like 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"redaction hook {spec!r} cannot be imported: {e}") from None
    if not callable(fn):
        raise ValueError(f"redaction hook {spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


class Pipeline:
    def __init__(
        self,
        *,
        build: Callable[[Any], CollectedSample],
        sink: SampleSink,
        metrics: CollectorMetrics,
        queue_size: int = 1000,
        redact: Redactor | None = None,
        batch_max: int = 64,
        name: str = "collector",
        after_fork: Callable[[], SampleSink] | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._build = build
        self._sink = sink
        self.metrics = metrics
        self._redact = redact
        self._batch_max = batch_max
        self._queue_size = queue_size
        self._name = name
        self._after_fork = after_fork
        self._closed = False
        self._start()
        reinit = weakref.WeakMethod(self._reinit_in_child)  # the handler must not keep the pipeline alive
        os.register_at_fork(after_in_child=lambda: (m := reinit()) is not None and m())

    def _start(self) -> None:
        self._pid = os.getpid()
        self._q: queue.Queue[Any] = queue.Queue(maxsize=self._queue_size)
        self._thread = threading.Thread(target=self._run, name=f"vlmwatch-{self._name}-worker", daemon=True)
        self._thread.start()

    def _reinit_in_child(self) -> None:
        """In a forked child: a new queue (the old one's lock may be held) and a worker of its own."""
        if self._closed or self._pid == os.getpid():
            return
        with swallowed("restarting the collector worker after fork", log) as guard:
            if self._after_fork is not None:
                self._sink = self._after_fork()
            self._start()
        if guard.error is not None:  # never fail the host's fork; offer() then counts drops
            self._closed = True

    def offer(self, item: Any) -> bool:
        """Hand ``item`` to the worker without blocking; ``False`` (and a counted drop) if it cannot."""
        if self._pid != os.getpid():  # forked without Python's fork handlers
            self._reinit_in_child()
        if self._closed:
            self.metrics.drop("shutdown")
            return False
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.metrics.drop("queue_full")
            return False
        return True

    def drop(self, reason: str) -> None:
        self.metrics.drop(reason)

    def queue_depth(self) -> int:
        """Items waiting for the worker now."""
        return self._q.qsize()

    def _one(self, item: Any) -> bytes | None:
        sample = self._built(item)
        if sample is not None and self._redact is not None:
            sample = self._redacted(sample)
        if sample is None:
            return None
        with swallowed("serialising a sample", log):
            return sample.to_bytes()
        self.metrics.drop("internal_error")
        return None

    def _built(self, item: Any) -> CollectedSample | None:
        with swallowed("building a sample", log):  # a bug in building must not stop the worker
            try:
                return self._build(item)
            except DropSample as d:
                self.metrics.drop(d.reason)
                if d.reason != "sampled_out":
                    log.debug("sample dropped: %s", d)
                return None
        self.metrics.drop("internal_error")
        return None

    def _redacted(self, sample: CollectedSample) -> CollectedSample | None:
        assert self._redact is not None
        try:
            redacted = self._redact(sample)
        except Exception as e:  # the hook's own failure: drop, never store raw
            log.warning("redaction hook raised %r; sample dropped", e)
            self.metrics.drop("redaction_failed")
            return None
        if redacted is None:
            self.metrics.drop("redacted_out")
            return None
        if not isinstance(redacted, CollectedSample):
            log.warning("redaction hook returned %s, not a CollectedSample; sample dropped",
                        type(redacted).__name__)
            self.metrics.drop("redaction_failed")
            return None
        return redacted

    def _run(self) -> None:
        while True:
            item = self._q.get()
            batch = [item]
            while len(batch) < self._batch_max:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            stop = any(b is _STOP for b in batch)
            marks = [b for b in batch if isinstance(b, threading.Event)]
            items = [b for b in batch if b is not _STOP and not isinstance(b, threading.Event)]
            payloads = [p for p in (self._one(b) for b in items) if p is not None]
            if payloads:
                with swallowed("spool append", log) as guard:  # disk full, permissions: keep serving
                    n = self._sink.append(payloads)
                    self.metrics.spooled.labels(self.metrics.source).inc(n)
                if guard.error is not None:  # the samples are lost
                    self.metrics.drop("spool_error", len(payloads))
            self.metrics.queue_depth.labels(self.metrics.source).set(self._q.qsize())
            for mark in marks:
                mark.set()
            if stop:
                return

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything offered so far is processed (tests, graceful shutdown)."""
        if self._closed:
            return True
        mark = threading.Event()
        try:
            self._q.put(mark, timeout=timeout)
        except queue.Full:
            return False
        return mark.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Process what is queued within ``timeout``; whatever is left is counted as ``shutdown``."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._q.put(_STOP, timeout=0.05)
                break
            except queue.Full:
                continue
        self._thread.join(max(0.0, deadline - time.monotonic()))
        left = 0
        while True:
            try:
                item = self._q.get_nowait()
                if isinstance(item, threading.Event):
                    item.set()
                elif item is not _STOP:
                    left += 1
            except queue.Empty:
                break
        if left:
            log.warning("collector shut down with %d samples still queued; dropped", left)
            self.metrics.drop("shutdown", left)
