"""Collectors: they sit beside production serving and hand sampled exchanges to the monitor.

The contract
============

**A collector may lose a sample; it never changes, delays noticeably, or fails a request.**

- The proxy relays bytes verbatim in both directions: the client receives exactly the
  upstream's status, headers and body (SSE chunk by chunk), the upstream receives exactly what
  the client sent. The only response the proxy makes itself is a ``502`` when the upstream
  cannot be reached or stops answering (and ``/metrics``, its own endpoint).
- Everything that costs time (JSON parsing, base64 decoding, image checks, redaction, spool
  writes) happens off the request path, in a worker fed by a bounded queue with ``put_nowait``.
  When the queue is full the sample is dropped, never the request delayed.
- Every lost sample is counted by reason (``queue_full``, ``sampled_out``, ``too_large``,
  ``bad_json``, ``bad_response``, ``unsupported_content``, ``no_image``, ``bad_image``,
  ``upstream_error``, ``redaction_failed``, ``redacted_out``, ``spool_full``, ``spool_error``,
  ``shutdown``) and exposed as Prometheus metrics.
- SDK wrappers return the wrapped call's own value, raise its own exception untouched, and add
  microseconds at most; an error inside the collector is swallowed and reported through
  ``storage.failopen.swallowed`` (tests re-raise it).
- A sample accepted by the spool (written and fsync'd) survives a crash or a storage outage;
  the shipper delivers it with an idempotent id, so a restart never duplicates it.
- A redaction hook runs before anything is stored; if it raises, the sample is dropped, never
  stored raw.

Modules: :mod:`collectors.sampling` (policy), :mod:`collectors.exchange` (request/response to
sample), :mod:`collectors.pipeline` (bounded hand-off and worker thread),
:mod:`collectors.sampler_process` (the proxy's worker process), :mod:`collectors.spool`,
:mod:`collectors.shipper`, :mod:`collectors.proxy` and :mod:`collectors.proxy_relay`,
:mod:`collectors.tailer`, :mod:`collectors.sdk`, :mod:`collectors.metrics`,
:mod:`collectors.service` (what the CLI runs), :mod:`collectors.canned_upstream` (a canned
OpenAI-compatible server for tests and the benchmark).

For the daemon: ``Shipper(spool_dir, storage_url).start()`` ships every lane under ``spool.dir``
in a thread (``stop()`` to end it), or call ``ship_once()`` from a scheduled job; a lane shipped by
another process is skipped (one shipper per lane, by file lock).

Collectors never import torch, transformers, evidently or ``monitor``; this package's import is
kept free of side effects so that the CLI starts fast.
"""

__all__: list[str] = []
