"""Prometheus metrics of a vlmwatch process: the daemon's jobs and the API's routes (the default
registry, served on the API's ``/metrics``).

Low on purpose: :mod:`monitor.daemon` and :mod:`monitor.api` both count here, and neither imports
the other.

Counters are declared without the ``_total`` suffix, as prometheus_client expects (it appends
it: ``Counter("vlmwatch_job_runs", ...)`` is exposed as ``vlmwatch_job_runs_total``), the same
convention as :mod:`collectors.metrics`. Values that live in the database (calibration windows,
alerts, queues) are read at scrape time by :mod:`monitor.api.db_metrics`.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from collectors.dead_letter import DeadLetterCollector

__all__ = [
    "JOB_RUNS",
    "JOB_FAILURES",
    "JOB_OVERRUNS",
    "JOB_DURATION",
    "JOB_PROCESSED",
    "SAMPLES_SCORED",
    "SAMPLES_FAILED",
    "IMAGES_PURGED",
    "IMAGE_FETCHES",
    "SAMPLES_IMAGE_UNAVAILABLE",
    "IS_LEADER",
    "API_INGESTED",
    "API_LABELS",
    "API_OTLP_SPANS",
    "API_OTLP_DROPPED",
    "DEAD_LETTERS",
    "LABELS_EXPIRED",
]

JOB_RUNS = Counter("vlmwatch_job_runs", "Daemon job runs, by job and outcome", ["daemon_job", "outcome"])
JOB_FAILURES = Counter("vlmwatch_job_failures", "Daemon job runs that raised", ["daemon_job"])
JOB_OVERRUNS = Counter("vlmwatch_job_overruns", "Job runs that took longer than their time budget", ["daemon_job"])
JOB_DURATION = Histogram(
    "vlmwatch_job_duration_seconds",
    "Wall time of daemon job runs",
    ["daemon_job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
JOB_PROCESSED = Counter("vlmwatch_job_processed", "Items processed by daemon jobs", ["daemon_job"])
SAMPLES_SCORED = Counter("vlmwatch_samples_scored", "Samples scored by this process", ["model"])
SAMPLES_FAILED = Counter("vlmwatch_samples_failed", "Samples given up after repeated scoring errors", ["model"])
IMAGES_PURGED = Counter("vlmwatch_images_purged", "Image payloads deleted by the retention job")
IMAGE_FETCHES = Counter("vlmwatch_image_fetches", "Image URLs fetched for scoring, by outcome (ok or the reason)",
                        ["outcome"])
SAMPLES_IMAGE_UNAVAILABLE = Counter(
    "vlmwatch_samples_image_unavailable",
    "Samples set aside unscored because their image could not be had, by reason", ["model", "reason"],
)
IS_LEADER = Gauge("vlmwatch_scheduler_leader", "1 when this process is the scheduler leader")
API_INGESTED = Counter("vlmwatch_api_samples", "Samples received by POST /v1/samples", ["outcome"])
API_LABELS = Counter("vlmwatch_api_labels", "Labels received by POST /v1/labels", ["outcome"])
API_OTLP_SPANS = Counter("vlmwatch_api_otlp_spans", "Spans received by POST /v1/traces, by outcome "
                         "(accepted, duplicate, dropped: a GenAI span that cannot be a sample, ignored: no LLM call)",
                         ["outcome"])
API_OTLP_DROPPED = Counter("vlmwatch_api_otlp_spans_dropped", "GenAI spans POST /v1/traces could not store, by reason",
                           ["reason"])
for _outcome in ("accepted", "duplicate", "dropped", "ignored"):  # zeros, so dashboards and rate() see every series
    API_OTLP_SPANS.labels(_outcome)
LABELS_EXPIRED = Counter(
    "vlmwatch_labels_expired",
    "Labels by response id deleted by retention: their sample never arrived within storage.unjoined_label_ttl_hours",
)
DEAD_LETTERS = DeadLetterCollector()  # the ship job's spool (spool.collector_ships: false), from the files
REGISTRY.register(DEAD_LETTERS)
