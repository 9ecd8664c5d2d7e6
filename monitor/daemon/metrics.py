"""Prometheus metrics of the daemon and the API (the default registry, served on ``/metrics``)."""

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
    "DEAD_LETTERS",
    "LABELS_EXPIRED",
]

JOB_RUNS = Counter("vlmwatch_job_runs_total", "Daemon job runs, by job and outcome", ["job", "outcome"])
JOB_FAILURES = Counter("vlmwatch_job_failures_total", "Daemon job runs that raised", ["job"])
JOB_OVERRUNS = Counter("vlmwatch_job_overruns_total", "Job runs that took longer than their time budget", ["job"])
JOB_DURATION = Histogram(
    "vlmwatch_job_duration_seconds",
    "Wall time of daemon job runs",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
JOB_PROCESSED = Counter("vlmwatch_job_processed_total", "Items processed by daemon jobs", ["job"])
SAMPLES_SCORED = Counter("vlmwatch_samples_scored_total", "Samples scored by this process", ["model"])
SAMPLES_FAILED = Counter("vlmwatch_samples_failed_total", "Samples given up after repeated scoring errors", ["model"])
IMAGES_PURGED = Counter("vlmwatch_images_purged_total", "Image payloads deleted by the retention job")
IMAGE_FETCHES = Counter("vlmwatch_image_fetches_total", "Image URLs fetched for scoring, by outcome (ok or the reason)",
                        ["outcome"])
SAMPLES_IMAGE_UNAVAILABLE = Counter(
    "vlmwatch_samples_image_unavailable_total",
    "Samples set aside unscored because their image could not be had, by reason", ["model", "reason"],
)
IS_LEADER = Gauge("vlmwatch_scheduler_leader", "1 when this process is the scheduler leader")
API_INGESTED = Counter("vlmwatch_api_samples_total", "Samples received by POST /v1/samples", ["outcome"])
API_LABELS = Counter("vlmwatch_api_labels_total", "Labels received by POST /v1/labels", ["outcome"])
LABELS_EXPIRED = Counter(
    "vlmwatch_labels_expired_total",
    "Labels by response id deleted by retention: their sample never arrived within storage.unjoined_label_ttl_hours",
)
DEAD_LETTERS = DeadLetterCollector()  # the ship job's spool (spool.collector_ships: false), from the files
REGISTRY.register(DEAD_LETTERS)
