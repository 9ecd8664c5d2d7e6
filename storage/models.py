"""SQLAlchemy 2.0 typed models: the whole schema of vlmwatch.

Changes to this file need an Alembic migration in ``storage/migrations/versions``.
Timestamps are timezone-aware UTC. Ids that cross process boundaries (samples, alerts,
deliveries) are strings so collectors can make them idempotently.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "utcnow",
    "Sample",
    "Image",
    "ProbeVersion",
    "Score",
    "SpotCheck",
    "Label",
    "CalibrationWindow",
    "Reference",
    "DetectorState",
    "DetectorTuning",
    "Alert",
    "AlertDelivery",
    "JobRun",
    "Tally",
    "InputFeature",
    "InputReference",
    "SAMPLE_STATUSES",
    "LABEL_SOURCES",
    "OVERALL_TASK",
]

SAMPLE_STATUSES = ("pending", "scored", "failed", "image_unavailable", "stale", "skipped")
LABEL_SOURCES = ("human", "ground_truth", "self_consistency")
OVERALL_TASK = ""  # CalibrationWindow.task of the overall windows (every sample, with a task or not)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _TZDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect.

    SQLite has no timezone type: values are stored as naive UTC and read back with UTC attached.
    Naive datetimes handed in are taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


TS = _TZDateTime


# Deterministic constraint names, so Alembic migrations can refer to them on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: TS()}


class Image(Base):
    """An image, content-addressed. ``data`` is dropped after scoring unless configured to keep."""

    __tablename__ = "images"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(Text)  # http(s) image not yet fetched (data is None)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    purged_at: Mapped[datetime | None] = mapped_column()


class Sample(Base):
    """One sampled production exchange: image + prompt + served answer."""

    __tablename__ = "samples"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    response_id: Mapped[str | None] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(256))  # indexed with ts: ix_samples_model_ts
    route: Mapped[str] = mapped_column(String(256), default="/v1/chat/completions")
    source: Mapped[str] = mapped_column(String(32), default="ingest")  # proxy|tailer|sdk|ingest|api
    ts: Mapped[datetime] = mapped_column(index=True)  # when the request happened
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    prompt: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str | None] = mapped_column(ForeignKey("images.sha256"), index=True)
    # one of SAMPLE_STATUSES; image_unavailable: its image could not be had, never scored without it
    status: Mapped[str] = mapped_column(String(32), default="pending")  # indexed: ix_samples_status_model_ts
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)  # last scoring error / "image_unavailable: <reason>: ..."
    # the claim on this sample's pending work: scoring while status is pending, then the spot check
    # while it is scored and spotcheck_status pending (monitor.daemon.leases, monitor.spotcheck.job)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    spotcheck_status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|selected|done|skipped
    # the sample's task (yesno, describe, ...): given at ingest, else inferred from the prompt or route
    # by the configured patterns (collectors.tasks, storage.tasks); NULL = no task, counted only in the overall calibration windows and detectors
    task: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ProbeVersion(Base):
    """A trained probe artifact registered for a served model; at most one active per model."""

    __tablename__ = "probe_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(256), index=True)
    version: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(Text)
    model_fingerprint: Mapped[str] = mapped_column(String(64))
    layer: Mapped[int] = mapped_column(Integer)
    pooling: Mapped[str] = mapped_column(String(32))
    threshold: Mapped[float] = mapped_column(Float, default=0.5)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column()
    __table_args__ = (UniqueConstraint("model", "version", name="uq_probe_model_version"),)


class Score(Base):
    """A probe score for a sample, plus the free signals read from the same forward pass."""

    __tablename__ = "scores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    probe_version_id: Mapped[int] = mapped_column(ForeignKey("probe_versions.id"), index=True)
    p_correct: Mapped[float] = mapped_column(Float)
    answer_prob: Mapped[float | None] = mapped_column(Float)
    attn_entropy: Mapped[float | None] = mapped_column(Float)
    attn_topk_mass: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    __table_args__ = (UniqueConstraint("sample_id", "probe_version_id", name="uq_score_sample_probe"),)


class SpotCheck(Base):
    """Self-consistency result for a sample (K sampled answers or the exact one-token distribution)."""

    __tablename__ = "spot_checks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), unique=True)
    k: Mapped[int] = mapped_column(Integer)
    one_token: Mapped[bool] = mapped_column(Boolean)
    agreement: Mapped[float] = mapped_column(Float)  # share of K answers in the served answer's group
    entropy: Mapped[float] = mapped_column(Float)  # over answer groups (nats)
    majority_answer: Mapped[str | None] = mapped_column(Text)
    groups: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # group -> count or probability
    # free text: each content word of the served answer -> share of the K samples that use it
    support: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    inclusion_prob: Mapped[float] = mapped_column(Float)  # selection probability, for unbiased estimates
    reason: Mapped[str] = mapped_column(String(16))  # boundary | uniform
    compute_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Label(Base):
    """Correctness evidence: human / ground-truth labels and self-consistency verdicts.

    Labels may arrive before their sample (joined later by ``response_id``), late, and out of order.
    """

    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sample_id: Mapped[str | None] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    response_id: Mapped[str | None] = mapped_column(String(128), index=True)
    correct: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(32), index=True)  # one of LABEL_SOURCES
    value: Mapped[float | None] = mapped_column(Float)  # e.g. self-consistency agreement
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)  # arrival time
    __table_args__ = (
        UniqueConstraint("sample_id", "source", name="uq_label_sample_source"),
        UniqueConstraint("response_id", "source", name="uq_label_response_source"),
    )


class LabelRevision(Base):
    """A label whose verdict changed (``labels.correct`` updated in place): the evidence event that
    tells consumers which already-read observation to retract and what replaces it.

    Its id is its own cursor space (``monitor.calibration.revisions``)."""

    __tablename__ = "label_revisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id", ondelete="CASCADE"), index=True)
    old_correct: Mapped[bool] = mapped_column(Boolean)
    new_correct: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CalibrationWindow(Base):
    """One calibration-history row: a window of samples with evidence, for one evidence source,
    overall (``task`` = ``""``, :data:`OVERALL_TASK`) or of one task's samples."""

    __tablename__ = "calibration_windows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(256), index=True)
    probe_version_id: Mapped[int] = mapped_column(ForeignKey("probe_versions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # time | rolling
    source: Mapped[str] = mapped_column(String(32))  # human | self_consistency | combined
    task: Mapped[str] = mapped_column(String(64), default="")  # "" = overall (every sample)
    window_start: Mapped[datetime] = mapped_column(index=True)
    window_end: Mapped[datetime] = mapped_column()
    n: Mapped[int] = mapped_column(Integer)
    partial: Mapped[bool] = mapped_column(Boolean, default=False)
    auroc: Mapped[float | None] = mapped_column(Float)
    ece: Mapped[float | None] = mapped_column(Float)
    brier: Mapped[float | None] = mapped_column(Float)
    agreement: Mapped[float | None] = mapped_column(Float)
    mean_score: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)  # everything, with CIs
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (
        UniqueConstraint("model", "probe_version_id", "kind", "source", "task", "window_start", name="uq_calwin"),
    )


class Reference(Base):
    """Reference statistics a probe version is compared against (pinned or the first N labels).

    At most one active per probe version (partial unique index ``uq_references_active``).
    """

    __tablename__ = "references"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(256), index=True)
    probe_version_id: Mapped[int] = mapped_column(ForeignKey("probe_versions.id"), index=True)
    window_start: Mapped[datetime] = mapped_column()
    window_end: Mapped[datetime] = mapped_column()
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DetectorTuning(Base):
    """Thresholds found by ``vlmwatch detect tune`` (simulation on the reference)."""

    __tablename__ = "detector_tunings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(256), index=True)
    probe_version_id: Mapped[int] = mapped_column(ForeignKey("probe_versions.id"), index=True)
    reference_id: Mapped[int | None] = mapped_column(ForeignKey("references.id"))
    detector: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    simulated_false_alarm_rate: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DetectorState(Base):
    """Persisted state of a sequential detector, so a restart continues where it stopped."""

    __tablename__ = "detector_states"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(256))
    probe_version_id: Mapped[int] = mapped_column(ForeignKey("probe_versions.id"))
    detector: Mapped[str] = mapped_column(String(64))
    cursor: Mapped[int] = mapped_column(Integer, default=0)  # last consumed evidence row id
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    __table_args__ = (UniqueConstraint("model", "probe_version_id", "detector", name="uq_detector_state"),)


class Alert(Base):
    """An alert and its lifecycle (firing -> resolved), deduplicated by fingerprint."""

    __tablename__ = "alerts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    rule: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)  # firing | resolved
    severity: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(256))
    probe_version: Mapped[str | None] = mapped_column(String(128))
    task: Mapped[str | None] = mapped_column(String(64))  # the task slice the alert is about; NULL = overall
    window: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detector: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # reference, sample ids
    clear_count: Mapped[int] = mapped_column(Integer, default=0)  # hysteresis counter
    started_at: Mapped[datetime] = mapped_column()
    resolved_at: Mapped[datetime | None] = mapped_column()
    last_notified_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AlertDelivery(Base):
    """Outbox: one row per (alert notification, channel), delivered at least once across restarts.

    A row that reached ``sent`` is never sent again; a crash between the receiver's 2xx and the
    ``sent`` commit resends it (same ``Idempotency-Key`` = ``id``), so receivers deduplicate by it.
    """

    __tablename__ = "alert_deliveries"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id"), index=True)
    channel: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(16))  # firing | resolved | renotify
    body: Mapped[str] = mapped_column(Text)  # exact bytes to send (signature covers them)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending|sending|sent|gave_up
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline_at: Mapped[datetime] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()


class JobRun(Base):
    """One run of a daemon job (for ``vlmwatch status`` and /metrics)."""

    __tablename__ = "job_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(32), index=True)
    worker: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    ok: Mapped[bool | None] = mapped_column(Boolean)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class Tally(Base):
    """A running total kept across restarts (``vlmwatch status``), e.g. labels expired unjoined."""

    __tablename__ = "tallies"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class InputFeature(Base):
    """Input features of one scored sample (``monitor.inputs.features``), kept after its image is purged."""

    __tablename__ = "input_features"
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(256))  # indexed with ts: ix_input_features_model_ts
    ts: Mapped[datetime] = mapped_column()  # the sample's request time
    features: Mapped[dict[str, Any]] = mapped_column(JSON)  # numeric and categorical features by name
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # float16 vision embedding (64 values), if the scorer gave one
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InputReference(Base):
    """The input-drift reference of a served model: its window, fitted PCA, tuned thresholds, detector state.

    At most one active per model (partial unique index ``uq_input_references_active``).
    """

    __tablename__ = "input_references"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(256), index=True)
    window_start: Mapped[datetime] = mapped_column()
    window_end: Mapped[datetime] = mapped_column()
    n: Mapped[int] = mapped_column(Integer)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)  # thresholds, PCA, category sets
    state: Mapped[dict[str, Any]] = mapped_column(JSON)  # cursor and recent window results
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


Index("ix_samples_status_lease", Sample.status, Sample.lease_expires_at)
# one model's samples newest first (the dashboard's keyset pages, per-model counts and time ranges)
Index("ix_samples_model_ts", Sample.model, Sample.ts, Sample.id)
# samples by status, then model and time: the queue per model and its oldest entry without a table scan
Index("ix_samples_status_model_ts", Sample.status, Sample.model, Sample.ts)
# the newest window of a probe version x kind x source (/metrics at every scrape, the detect job's alert context)
Index("ix_calwin_latest", CalibrationWindow.probe_version_id, CalibrationWindow.kind, CalibrationWindow.source,
      CalibrationWindow.task, CalibrationWindow.window_end)
# one active reference per probe version: two jobs creating the default one at once make one row
Index("uq_references_active", Reference.probe_version_id, unique=True,
      sqlite_where=text("active"), postgresql_where=text("active"))
Index("ix_input_features_model_ts", InputFeature.model, InputFeature.ts, InputFeature.sample_id)
Index("uq_input_references_active", InputReference.model, unique=True,
      sqlite_where=text("active"), postgresql_where=text("active"))
Index("ix_deliveries_due", AlertDelivery.status, AlertDelivery.next_attempt_at)
