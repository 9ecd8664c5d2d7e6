"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "UtcDatetime",
    "QueryText",
    "MAX_INT",
    "SampleIn",
    "SamplesIn",
    "SamplesOut",
    "RejectedOut",
    "LabelIn",
    "LabelsOut",
    "CalibrationRow",
    "AlertOut",
    "Health",
    "RecalibrateIn",
]


MAX_INT = 2**31 - 1  # the database's INTEGER: an id or count past it cannot be compared with a column


def _utc(value: datetime) -> datetime:
    """``value`` in UTC (naive means UTC); refused when UTC puts it outside years 1 to 9999."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("out of range: in UTC it falls outside years 1 to 9999") from None


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000)")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]  # a time the API compares with stored ones
QueryText = Annotated[str, AfterValidator(_no_nul)]  # a text the API compares with stored ones


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleIn(_In):
    """One sample, as in a samples file; the image as a data URL, bare base64 or http(s) URL."""

    id: str = Field(min_length=1, max_length=128, description="collector-chosen id; makes ingest idempotent")
    ts: datetime | None = Field(None, description="when the request happened (ISO 8601; default: now)")
    model: str = Field(min_length=1, max_length=256, description="served model name, as clients send it")
    image: str | None = Field(None, description="data URL, bare base64, or http(s) URL (not fetched at ingest)")
    prompt: str
    answer: str
    label: bool | None = Field(None, description="answer correct? stored as a ground_truth label")
    response_id: str | None = Field(None, max_length=128)
    route: str | None = Field(None, max_length=256)
    task: str | None = Field(None, max_length=64, description="the sample's task; wins over collectors.tasks")
    meta: dict[str, Any] | None = None


class SamplesIn(_In):
    samples: list[SampleIn] = Field(min_length=1, max_length=1000)


class RejectedOut(BaseModel):
    index: int
    id: str
    reason: str


class SamplesOut(BaseModel):
    accepted: int = Field(description="new samples stored")
    duplicates: int = Field(description="samples already stored (idempotent re-send)")
    rejected: list[RejectedOut] = Field(default_factory=list)


class StoredSample(BaseModel):
    """What the lookup says about one stored sample (no prompt, answer or image)."""

    id: str
    model: str
    ts: datetime
    route: str
    status: str  # pending | scored | failed | image_unavailable
    labels: list[str]  # label sources already recorded for it


class SampleLookup(BaseModel):
    response_id: str
    sampled: bool  # a sample with this response id is stored: a label for it will count
    samples: list[StoredSample]
    waiting_labels: int  # labels by this response id still waiting for their sample


class LabelIn(_In):
    """Correctness of a served answer, by ``response_id`` (the upstream ``chatcmpl-...`` id) or ``sample_id``."""

    response_id: str | None = Field(None, min_length=1, max_length=128)
    sample_id: str | None = Field(None, min_length=1, max_length=128)
    correct: bool
    source: Literal["human", "ground_truth"] = "human"

    @model_validator(mode="after")
    def _one_key(self) -> "LabelIn":
        if (self.response_id is None) == (self.sample_id is None):
            raise ValueError("give exactly one of response_id or sample_id")
        return self


class LabelsOut(BaseModel):
    stored: int = Field(description="new labels stored")
    updated: int = Field(0, description="labels that changed an earlier verdict of the same source")
    duplicates: int = Field(description="labels already present, unchanged (idempotent re-send)")
    waiting: int = Field(0, description="labels stored by response_id whose sample has not arrived yet")
    rejected: list[RejectedOut] = Field(default_factory=list)


class CalibrationRow(BaseModel):
    model: str
    probe_version_id: int
    kind: str
    source: str
    task: str | None  # None: the overall window (every sample)
    window_start: datetime
    window_end: datetime
    n: int
    partial: bool
    auroc: float | None
    ece: float | None
    brier: float | None
    agreement: float | None
    mean_score: float | None
    metrics: dict[str, Any]

    @field_validator("task", mode="before")
    @classmethod
    def _overall_is_none(cls, v: Any) -> Any:
        return v or None  # storage marks the overall windows with ""


class AlertOut(BaseModel):
    id: str
    fingerprint: str
    rule: str
    state: str
    severity: str
    model: str
    probe_version: str | None
    task: str | None = None  # the task slice the alert is about; None: the overall alert
    window: dict[str, Any] | None
    metrics: dict[str, Any] | None
    detector: dict[str, Any] | None
    started_at: datetime
    resolved_at: datetime | None
    updated_at: datetime | None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    schema_ok: bool
    writes: Literal["open", "token"] = Field(description="open: anyone who reaches the API may write; "
                                                         "token: writes need the bearer token of api.token_env")
    daemon: dict[str, Any] | None = None
    error: str | None = None


class RecalibrateIn(_In):
    """Options of ``POST /v1/probes/{model}/recalibrate`` (as ``vlmwatch probe recalibrate``'s flags)."""

    since: UtcDatetime | None = Field(None, description="only labels of samples from this time on (ISO 8601; UTC if no offset)")
    max_labels: int | None = Field(None, ge=1, le=MAX_INT, description="freshest labelled samples to fit on (default: recalibration.max_labels)")
    method: Literal["auto", "platt", "temperature", "isotonic"] = "auto"
    activate: bool = Field(False, description="make the new version the active probe")
    force: bool = Field(False, description="write the new version even when the advice is to retrain")
