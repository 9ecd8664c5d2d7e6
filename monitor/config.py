"""Typed, immutable configuration: YAML file, then ``VLMWATCH_<SECTION>__<KEY>`` env overrides.

Config is validated once at startup (:func:`load_config`) and never written back; secrets are
read from the environment (``*_env`` keys name the variable) so they never sit in a file.
Every key here is documented in ``config.example.yaml``; ``tests/test_config.py`` proves the two
agree key for key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = [
    "ConfigError",
    "Settings",
    "load_config",
    "DEFAULT_CONFIG_PATH",
]

DEFAULT_CONFIG_PATH = Path("vlmwatch.yaml")


class ConfigError(Exception):
    """Invalid configuration; the message names the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Section):
    url: str = "sqlite:///vlmwatch.db"  # SQLite (WAL) by default; postgresql+psycopg://user@host/db to scale out
    password_env: str = "VLMWATCH_DB_PASSWORD"  # env var holding the DB password, injected into url if set
    keep_images: bool = False  # keep raw image bytes after scoring and spot checks
    image_ttl_hours: float = 24.0  # image bytes are deleted after this even if never scored
    max_image_bytes: int = 20_000_000  # larger images are rejected at ingest
    unjoined_label_ttl_hours: float = Field(168.0, ge=0)  # labels by response_id still waiting for their sample after this are deleted and counted; 0 = never


class ImageFetchConfig(_Section):
    enabled: bool = True  # fetch http(s) image URLs of samples before scoring (false: such samples are image_unavailable)
    allow: tuple[str, ...] = ()  # networks (10.0.0.0/8) or hosts (img.example.com, *.cdn.example.com) to fetch from; empty = any public address
    timeout_seconds: float = Field(10.0, gt=0)  # one image: connect, headers and body together
    max_redirects: int = Field(3, ge=0)  # redirects followed, each target checked like the first URL
    concurrency: int = Field(4, ge=1)  # images fetched at once per scoring batch
    retry_seconds: float = Field(60.0, ge=0)  # a timeout, connection error or 5xx retries after this (up to daemon.max_attempts)

    @field_validator("allow")
    @classmethod
    def _allow_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from monitor.fetch_policy import parse_allow_entry

        for entry in value:
            parse_allow_entry(entry)  # ValueError names the entry
        return value


class ModelEntry(_Section):
    path: str  # local folder with the monitor's own copy of the weights (save_pretrained layout)
    probe: str | None = None  # probe artifact folder; None = the active probe registered in storage


class ScoringConfig(_Section):
    batch_size: int = 16  # samples per forward pass
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto = bfloat16 on GPU, float32 on CPU
    image_cache_size: int = 512  # image-feature cache entries (by image hash)
    lease_seconds: float = 300.0  # a claimed sample returns to the queue if not scored within this
    full_pass: bool = False  # run every layer + LM head to read answer_prob (else: probe layer only, answer_prob from captured logprobs)
    attention_signals: bool = True  # attention entropy / top-k mass over image tokens, from the probe-layer pass
    attention_topk_share: float = 0.1  # top-k mass counts the top 10% of image tokens
    head_backend: str = "onnx"  # onnx (ONNX Runtime, CUDA provider when present) | torch


class EquivalenceConfig(_Section):
    """How the spot checks group free-text answers that no SynPOPE task judge knows."""

    kind: Literal["content_words", "embedding"] = "content_words"  # content_words: same set of content words (monitor.spotcheck.answers.content_words); embedding: cosine similarity of a local sentence-embedding model
    path: str = ""  # kind=embedding: sentence-transformers model folder (modules.json, 1_Pooling/, weights, tokenizer), loaded offline
    threshold: float = Field(0.85, ge=-1.0, le=1.0)  # kind=embedding: an answer joins a group when its cosine similarity to the group's first member is at least this

    @model_validator(mode="after")
    def _embedding_folder(self) -> "EquivalenceConfig":
        if self.kind == "content_words":
            if self.path:
                raise ValueError("path is only read with kind: embedding")
            return self
        if not self.path:
            raise ValueError("kind: embedding needs path: a sentence-transformers model folder")
        from monitor.spotcheck.embedding_equivalence import check_layout

        check_layout(self.path)  # EmbeddingModelError (a ValueError) names the path and what is missing
        return self


class SpotcheckConfig(_Section):
    k: int = 10  # sampled answers per spot check
    temperature: float = 1.0  # sampling temperature for the K answers
    max_new_tokens: int = 32  # cap for each sampled answer
    rate: float = 0.05  # target share of scored samples to spot-check
    reference_rate: float = Field(0.35, ge=0.0, le=1.0)  # share checked in a probe's reference period (its first calibration.reference_n scored samples) until its spot-check reference is complete, so the spot-check detectors get the calibration.min_labels (100) checks they arm on: 0.35 of 400 = 140 expected; one-off cost reference_n x (reference_rate - rate) x seconds per check (1000 x 0.30 x 2 s = 600 s), still inside gpu_seconds_per_hour
    uniform_share: float = 0.3  # share of the budget spent on a uniform slice (unbiased estimates)
    boundary_width: float = 0.15  # |p - threshold| below this counts as near the decision boundary
    gpu_seconds_per_hour: float = 600.0  # compute budget for spot checks (seconds of device time per hour)
    max_candidates_per_run: int = 500  # scored samples considered per run, oldest first
    seconds_per_check_prior: float = 2.0  # expected compute seconds of one check until measured checks exist
    max_streams: int = 0  # decode at most this many of the K streams at once (0 = all; halved on out-of-memory)
    seed: int = 0  # salt of the per-sample RNG seeds: a check is reproducible from its sample id
    equivalence: EquivalenceConfig = EquivalenceConfig()  # grouping of free-text answers (SynPOPE samples use their task's judge)


class ServedCheckConfig(_Section):
    enabled: bool = True  # compare production with the monitor's copy of the weights (served_model_mismatch)
    recompute_share: float = Field(0.1, ge=0.0, le=1.0)  # share of samples with captured logprobs recomputed by a full pass (all of them with scoring.full_pass)
    token_tolerance: float = Field(0.75, gt=0)  # |served - recomputed| per token, in log-odds, above which a sample disagrees (bf16 vs fp32 same weights: max 0.54)
    same_weight_rate: float = Field(0.01, gt=0, lt=1)  # disagreeing share the log-prob CUSUM accepts
    mismatch_rate: float = Field(0.2, gt=0, lt=1)  # disagreeing share it is tuned to detect
    greedy_same_weight_rate: float = Field(0.02, gt=0, lt=1)  # greedy answers differing from served greedy ones, accepted (near-ties)
    greedy_mismatch_rate: float = Field(0.25, gt=0, lt=1)  # ... and tuned to detect
    threshold: float = Field(8.0, gt=0)  # CUSUM decision interval (8: three disagreements in a row fire)
    clear_after: int = Field(50, ge=1)  # agreeing checks in a row that resolve a firing served_model_mismatch

    @model_validator(mode="after")
    def _rates_ordered(self) -> "ServedCheckConfig":
        for low, high in (("same_weight_rate", "mismatch_rate"), ("greedy_same_weight_rate", "greedy_mismatch_rate")):
            if getattr(self, high) <= getattr(self, low):
                raise ValueError(f"{high} ({getattr(self, high)}) must be above {low} ({getattr(self, low)})")
        return self


class CalibrationConfig(_Section):
    window: str = "1h"  # time-window length for calibration history rows
    rolling_n: int = 500  # rolling window: last N samples with evidence
    min_labels: int = 100  # windows with less evidence are partial and never fire
    bins: int = 10  # bins for ECE (equal-width and equal-mass)
    bootstrap: int = 500  # bootstrap resamples for confidence intervals
    reference_n: int = 1000  # default reference: first N labelled samples after a probe is activated
    # the `combined` window source: each evidence source's share of the combined estimate, fixed
    # here so a combined metric cannot move with the spot-check budget or the label backlog
    combined_shares: dict[str, float] = Field(default_factory=lambda: {"human": 0.5, "self_consistency": 0.5})

    @field_validator("combined_shares")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        known = ("human", "self_consistency")
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown evidence source(s) {unknown}; expected {list(known)}")
        if any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError("shares must be >= 0 with a positive total")
        return value


class DetectConfig(_Section):
    target_false_alarm_rate: float = 0.05  # per 20,000 labelled samples, reached by simulation (detect tune)
    horizon: int = 20_000  # labelled samples over which the false-alarm rate is defined
    simulations: int = 2000  # simulated in-control streams per labelled-detector tuning (vectorised; tens of seconds at 20,000 labels); sets the FAR precision
    adwin_delta: float = 0.002  # largest ADWIN confidence tried by tuning (smaller ones until the false-alarm target holds)
    adwin_simulations: int = 100  # simulated streams per ADWIN tuning step
    drift_method: str = "psi"  # drift test on score distributions per window (psi: threshold tuned per window size)
    drift_threshold: float = 0.2  # other (Evidently) methods only: drift when distance >= this, or p-value < this


class InputsConfig(_Section):
    enabled: bool = True  # record input features of every scored sample and test them for drift
    reference_n: int = Field(1000, ge=100)  # default reference: the first N scored samples of a model
    window: int = Field(200, ge=20)  # scored samples per tested window (tumbling)
    simulations: int = Field(200, ge=20)  # permuted reference windows that tune the thresholds
    embedding_dims: int = Field(32, ge=2, le=64)  # PCA dimensions of the vision embedding, fitted on the reference
    min_new_category_share: float = Field(0.05, gt=0.0, le=1.0)  # a category unseen in the reference counts from this share of a window
    confirm_windows: int = Field(2, ge=1)  # consecutive drifted windows before input_drift fires (1: the first one)


class RecalibrationConfig(_Section):
    max_labels: int = Field(200, ge=1)  # freshest human / ground-truth labels `probe recalibrate` fits on
    min_labels: int = Field(100, ge=20)  # fewer labels (or under 10 correct or 10 incorrect): refused
    max_auroc_drop: float = Field(0.05, ge=0.0, le=1.0)  # AUROC this far below the probe's reference, beyond its CI: advice is retrain
    probe_dir: str = ""  # folder for recalibrated probe versions; "" = beside the active probe's artifact folder


class AlertRule(_Section):
    name: str  # rule name, part of the fingerprint
    detector: str  # cusum_disagreement | cusum_residual | adwin_scores | adwin_spotcheck | window_drift | input_drift | metric
    severity: Literal["info", "warning", "critical"] = "warning"
    metric: str | None = None  # for detector=metric: auroc | ece | brier | agreement
    op: Literal["<", ">"] = "<"  # for detector=metric: fire when metric op threshold
    threshold: float | None = None  # for detector=metric
    source: Literal["human", "self_consistency", "combined"] | None = None  # for detector=metric: the window source (required)
    resolve_after: int = 2  # consecutive clear evaluations before resolving (hysteresis)

    @model_validator(mode="after")
    def _metric_names_its_source(self) -> AlertRule:
        if self.detector == "metric" and self.source is None:
            raise ValueError(f"rule {self.name!r}: detector=metric needs source: human | self_consistency | combined")
        return self


def _default_rules() -> tuple[AlertRule, ...]:
    return (
        AlertRule(name="probe_disagreement_drift", detector="cusum_disagreement", severity="critical"),
        AlertRule(name="probe_calibration_drift", detector="cusum_residual", severity="warning"),
        AlertRule(name="probe_score_shift", detector="adwin_scores", severity="info"),
        AlertRule(name="score_distribution_drift", detector="window_drift", severity="info"),
        AlertRule(name="input_drift", detector="input_drift", severity="warning"),
    )


class ChannelConfig(_Section):
    """One notification channel (``alerts.channels[]``), of any kind."""

    name: str  # channel name used in logs and delivery rows
    kind: Literal["webhook", "slack", "alertmanager"] = "webhook"
    url: str  # receiver URL (alertmanager: its base URL; /api/v2/alerts is appended)
    secret_env: str | None = None  # env var holding the HMAC secret (webhook kind only)
    timeout_seconds: float = 10.0  # per attempt


class AlertsConfig(_Section):
    rules: tuple[AlertRule, ...] = Field(default_factory=_default_rules)
    channels: tuple[ChannelConfig, ...] = ()
    renotify_minutes: float = 240.0  # re-send a still-firing alert after this
    no_data_minutes: float = 120.0  # raise a no-data alert when no evidence arrives for this long
    delivery_deadline_minutes: float = 60.0  # give up on a delivery after this, and record it
    backoff_initial_seconds: float = 1.0  # first retry delay (exponential with jitter)
    backoff_max_seconds: float = 300.0  # cap for one retry delay


class ProxyConfig(_Section):
    listen: str = "127.0.0.1:8081"  # host:port the proxy accepts clients on
    upstream_url: str = "http://127.0.0.1:8000"  # OpenAI-compatible VLM server
    sample_rate: float = 0.1  # default share of requests sampled (deterministic by request hash)
    rates: dict[str, float] = Field(default_factory=dict)  # per model or "model:route" overrides
    queue_size: int = 1000  # bounded hand-off queue between request path and sampler
    max_body_bytes: int = 25_000_000  # larger requests pass through but are not sampled
    connect_timeout_seconds: float = 5.0  # upstream unreachable for this long: the client gets a 502
    read_timeout_seconds: float = 600.0  # upstream silent this long during a request: 502 (or close mid-answer)
    metrics_path: str = "/metrics"  # answered by the proxy itself (Prometheus); "" relays it upstream too


class TaskPattern(_Section):
    """One ``collectors.tasks`` entry: a sample whose prompt (and route) match belongs to task ``name``."""

    name: str  # task name (letters, digits, _ . -): the calibration windows, detectors and alerts of that slice
    prompt_regex: str | None = None  # Python regex searched in the prompt, case-insensitive
    route_regex: str | None = None  # ... in the route (request path); with both, both must match


class CollectorsConfig(_Section):
    # ordered task patterns: the first match names a sample's task; an explicit `task` in the record wins;
    # no match = no task (counted only overall). Applied when samples are stored (shipper, ingest, API).
    tasks: tuple[TaskPattern, ...] = ()

    @field_validator("tasks")
    @classmethod
    def _patterns_compile(cls, value: tuple[TaskPattern, ...]) -> tuple[TaskPattern, ...]:
        from storage.tasks import TaskRules

        TaskRules.from_config(value)  # ValueError names the entry and the bad pattern
        names = [t.name for t in value]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"task name(s) {dup} appear more than once; give one entry per task (a regex can use |)")
        return value


class SpoolConfig(_Section):
    dir: str = "vlmwatch-spool"  # append-only, fsync'd spool of accepted samples
    max_bytes: int = 1_000_000_000  # oldest records are dropped (and counted) beyond this
    ship_interval_seconds: float = 2.0  # how often the shipper drains the spool into storage
    collector_ships: bool = True  # proxy/tail run their own shipper process; false leaves it to the daemon
    redact_hook: str = ""  # "package.module:function" run on each sample before it is stored; "" = none
    background_nice: int = Field(10, ge=0, le=19)  # niceness (and SCHED_BATCH) of the sampler and shipper processes; 0 = as the collector


class ApiConfig(_Section):
    listen: str = "127.0.0.1:8090"  # host:port of the HTTP API
    token_env: str = "VLMWATCH_API_TOKEN"  # env var holding the bearer token for writes; unset = open writes
    allow_open_writes: bool = False  # serve open writes (no token) on a non-loopback listen; false = refuse to start
    max_body_bytes: int = Field(64_000_000, gt=0)  # larger request bodies get 413 (a base64 image is ~4/3 of its bytes)
    metrics_cache_seconds: float = Field(5.0, ge=0)  # /metrics re-reads the database values at most this often


class DaemonConfig(_Section):
    score_interval_seconds: float = 5.0  # how often each job runs
    spotcheck_interval_seconds: float = 15.0
    calibrate_interval_seconds: float = 30.0
    detect_interval_seconds: float = 30.0
    inputs_interval_seconds: float = 30.0  # the input-drift job (features vs their reference)
    deliver_interval_seconds: float = 5.0
    report_interval_minutes: float = 60.0
    retention_interval_minutes: float = 30.0
    job_time_budget_seconds: float = 60.0  # a run stops taking new work after this
    shutdown_timeout_seconds: float = 30.0  # SIGTERM: finish or abandon the batch, flush, exit within this
    start_api: bool = True  # serve the HTTP API inside the daemon
    report_dir: str = "vlmwatch-reports"  # where scheduled reports are written
    retention_days: float = 90.0  # samples and history older than this are deleted
    max_attempts: int = 3  # a sample whose scoring failed this many times is marked failed
    leader_check_seconds: float = 5.0  # PostgreSQL: how often a non-leader tries to take scheduler leadership
    job_runs_keep_days: float = 7.0  # job_runs rows older than this are deleted by the retention job
    report_since: str = "7d"  # time span covered by the scheduled report


class Settings(BaseSettings):
    """The whole configuration. Sections map to ``config.example.yaml``."""

    model_config = SettingsConfigDict(
        env_prefix="VLMWATCH_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    storage: StorageConfig = StorageConfig()
    image_fetch: ImageFetchConfig = ImageFetchConfig()
    models: dict[str, ModelEntry] = Field(default_factory=dict)  # served model name -> local folder + probe
    scoring: ScoringConfig = ScoringConfig()
    spotcheck: SpotcheckConfig = SpotcheckConfig()
    served_check: ServedCheckConfig = ServedCheckConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    detect: DetectConfig = DetectConfig()
    inputs: InputsConfig = InputsConfig()
    recalibration: RecalibrationConfig = RecalibrationConfig()
    alerts: AlertsConfig = AlertsConfig()
    proxy: ProxyConfig = ProxyConfig()
    collectors: CollectorsConfig = CollectorsConfig()
    spool: SpoolConfig = SpoolConfig()
    api: ApiConfig = ApiConfig()
    daemon: DaemonConfig = DaemonConfig()
    log_level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # env overrides the YAML values passed as init kwargs
        return (env_settings, init_settings)

    def task_rules(self) -> Any:
        """The compiled ``collectors.tasks`` patterns (:class:`storage.tasks.TaskRules`)."""
        from storage.tasks import TaskRules

        return TaskRules.from_config(self.collectors.tasks)

    def secret(self, env_name: str | None) -> str | None:
        """Read a secret from the environment by the variable name a ``*_env`` key holds."""
        if not env_name:
            return None
        return os.environ.get(env_name) or None


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  {key}: {e['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None) -> Settings:
    """Load and validate the configuration.

    ``path=None`` reads ``./vlmwatch.yaml`` when it exists, else uses built-in defaults.
    Raises :class:`ConfigError` with a message naming each bad key.
    """
    data: dict[str, Any] = {}
    source = "built-in defaults"
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: top level must be a mapping of sections")
        data = loaded
    try:
        return Settings(**data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None
