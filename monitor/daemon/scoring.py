"""The score job: claim pending samples, run each served model's probe scorer, write scores.

Scorers are loaded once per served model (config ``models``) by a *scorer factory* and kept for
the life of the daemon; a model whose scorer cannot be loaded (no active probe yet, missing
weights) is skipped this run and its samples stay pending. A batch that raises is recorded on
its samples; after ``daemon.max_attempts`` claims a sample is ``failed`` (a poison sample cannot
wedge the queue or crash-loop the daemon).

A sample that shows an image is scored with it or not at all: images given by URL are fetched
here (:mod:`monitor.daemon.sample_images`, off the request path), and a sample whose image cannot
be had (refused, 4xx, too large, not an image, bytes purged) becomes ``image_unavailable`` with
the reason in ``error``, counted in ``vlmwatch_samples_image_unavailable_total{model,reason}``.
Transient fetch failures (timeouts, connection errors, 5xx) leave it pending for
``image_fetch.retry_seconds``, up to ``daemon.max_attempts`` claims.

After a batch is written, the served tokens' log-probabilities of the samples the scorer
recomputed go to the model's served-model check (:mod:`monitor.probe.served_check`), whose verdict
fires or resolves ``served_model_mismatch``.

A scorer that refuses its probe (:class:`~monitor.probe.stale.ProbeStaleError`, at load or before a
batch: the served weights changed) fires ``probe_stale``; its samples stay pending, and the first
load whose probe matches again resolves it (:mod:`alerts.builtin`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from alerts.builtin import raise_probe_stale, report_served_mismatch, resolve_probe_stale
from monitor import metrics
from monitor.config import ModelEntry, Settings
from monitor.daemon.image_fetch import ImageFetcher, ImageUnavailable
from monitor.daemon.leases import claim_samples, mark_failed, mark_image_unavailable, release_samples, write_scores
from monitor.daemon.runner import JobContext, JobResult
from monitor.daemon.sample_images import load_images
from monitor.probe.score_result import ScoreResult
from monitor.probe.stale import ProbeStaleError
from storage.failopen import report_internal_error
from storage.models import ProbeVersion, Sample, utcnow

__all__ = ["ScoreInput", "Scorer", "ScorerFactory", "ScoreJob"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreInput:
    """One claimed sample, as a scorer sees it."""

    sample_id: str
    model: str
    prompt: str
    answer: str
    image: bytes | None
    meta: dict[str, Any] = field(default_factory=dict)
    route: str = ""
    ts: datetime | None = None


class Scorer(Protocol):
    """Scores samples of one served model with its active probe version."""

    probe_version_id: int

    def score(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        """One result per item, in order."""
        ...


ScorerFactory = Callable[[str, ModelEntry, Settings, sessionmaker[Session]], Scorer]


class ScoreJob:
    """Callable job object; keeps the loaded scorers between runs."""

    def __init__(self, settings: Settings, factory: ScorerFactory, *, max_attempts: int = 3,
                 fetcher: ImageFetcher | None = None) -> None:
        self.settings = settings
        self.factory = factory
        self.max_attempts = max_attempts
        self.fetcher = fetcher if fetcher is not None else ImageFetcher.from_settings(settings)
        self._scorers: dict[str, Scorer] = {}
        self._load_errors: dict[str, tuple[float, str]] = {}
        self.retry_load_seconds = 30.0
        self.probe_check_seconds = 30.0
        self._probe_checked = 0.0
        for name in settings.models:  # zeros, so rate() and alerts see each model before its first event
            metrics.SAMPLES_SCORED.labels(name)
            metrics.SAMPLES_FAILED.labels(name)

    def _scorer(self, name: str, sessions: sessionmaker[Session]) -> Scorer | None:
        if name in self._scorers:
            return self._scorers[name]
        last = self._load_errors.get(name)
        if last and time.monotonic() - last[0] < self.retry_load_seconds:
            return None
        try:
            scorer = self.factory(name, self.settings.models[name], self.settings, sessions)
        except Exception as e:
            msg = f"{type(e).__name__}: {e}"
            if not last or last[1] != msg:
                logger.warning("model %s: scorer not available, its samples stay pending: %s", name, msg)
            self._load_errors[name] = (time.monotonic(), msg)
            if isinstance(e, ProbeStaleError):
                self._probe_stale(sessions, name, e)
            return None
        self._load_errors.pop(name, None)
        self._scorers[name] = scorer
        logger.info("model %s: scorer loaded (probe version %s)", name, scorer.probe_version_id)
        with sessions() as s:
            if resolve_probe_stale(s, self.settings.alerts, name):
                logger.info("model %s: probe version %s matches the served model again; probe_stale resolved", name,
                            scorer.probe_version_id)
            s.commit()
        return scorer

    def _probe_stale(self, sessions: sessionmaker[Session], name: str, err: ProbeStaleError) -> None:
        """Fire (or keep firing) ``probe_stale`` for ``name``."""
        with sessions() as s:
            raise_probe_stale(s, self.settings.alerts, err, model_path=self.settings.models[name].path)
            s.commit()

    def adapters(self) -> dict[str, Any] | None:
        """The loaded models by served name, when every configured model is loaded (else None)."""
        out = {n: getattr(sc, "adapter", None) for n, sc in self._scorers.items()}
        if set(out) != set(self.settings.models) or any(a is None for a in out.values()):
            return None
        return out

    def close(self) -> None:
        """Release the image fetcher's connections (daemon shutdown)."""
        if self.fetcher is not None:
            self.fetcher.close()

    def forget(self, name: str) -> None:
        """Drop a cached scorer (e.g. after a new probe version was activated)."""
        self._scorers.pop(name, None)

    def _check_active_probes(self, sessions: sessionmaker[Session]) -> None:
        """Reload a model whose active probe changed (``vlmwatch probe activate``) since it loaded."""
        if time.monotonic() - self._probe_checked < self.probe_check_seconds or not self._scorers:
            return
        self._probe_checked = time.monotonic()
        floating = [n for n in self._scorers if not self.settings.models[n].probe]
        if not floating:
            return
        with sessions() as s:
            rows = s.execute(select(ProbeVersion.model, ProbeVersion.id)
                             .where(ProbeVersion.model.in_(floating), ProbeVersion.active.is_(True))).all()
        active = {m: i for m, i in rows}
        for name in floating:
            if active.get(name) != self._scorers[name].probe_version_id:
                logger.info("model %s: active probe changed (%s -> %s): reloading", name,
                            self._scorers[name].probe_version_id, active.get(name))
                self.forget(name)

    def __call__(self, ctx: JobContext) -> JobResult:
        self._check_active_probes(ctx.sessions)
        ready = [m for m in self.settings.models if self._scorer(m, ctx.sessions) is not None]
        done = 0
        while ready and not ctx.should_stop():
            ready = [m for m in ready if m in self._scorers]  # a stale probe drops its model mid-run
            if not ready:
                break
            with ctx.sessions() as s:
                claimed = claim_samples(
                    s,
                    worker=ctx.worker,
                    models=ready,
                    limit=self.settings.scoring.batch_size,
                    lease_seconds=self.settings.scoring.lease_seconds,
                )
                if not claimed:
                    break
            items = self._with_images(ctx, claimed)
            by_model: dict[str, list[ScoreInput]] = defaultdict(list)
            for it in items:
                by_model[it.model].append(it)
            for name, group in by_model.items():
                if name in self._scorers:
                    done += self._score_group(ctx, name, group)
                else:  # dropped by an earlier group of this batch (stale probe)
                    with ctx.sessions() as s:
                        release_samples(s, [g.sample_id for g in group])
        return JobResult(done)  # samples scored

    def _with_images(self, ctx: JobContext, claimed: list[Sample]) -> list[ScoreInput]:
        """Inputs for the claimed samples whose image (if any) is at hand; the others are set aside."""
        images = load_images(ctx.sessions, {c.image_sha256 for c in claimed if c.image_sha256}, self.fetcher)
        items: list[ScoreInput] = []
        missing: dict[tuple[ImageUnavailable, str], list[str]] = defaultdict(list)
        for c in claimed:
            image = images[c.image_sha256] if c.image_sha256 else None
            if isinstance(image, ImageUnavailable):
                missing[(image, c.model)].append(c.id)
            else:
                items.append(ScoreInput(c.id, c.model, c.prompt, c.answer, image, dict(c.meta or {}), route=c.route or "",
                                        ts=c.ts))
        retry_at = utcnow() + timedelta(seconds=self.settings.image_fetch.retry_seconds)
        for (why, model), ids in missing.items():
            with ctx.sessions() as s:
                n = mark_image_unavailable(s, ids, why.message(), retry_at=retry_at if why.transient else None,
                                           max_attempts=self.max_attempts)
            if n:
                metrics.SAMPLES_IMAGE_UNAVAILABLE.labels(model, why.reason).inc(n)
                logger.warning("model %s: %d sample(s) set aside unscored: %s", model, n, why.message())
            if n < len(ids):
                logger.info("model %s: %d sample(s) wait %.0f s to fetch their image again: %s", model, len(ids) - n,
                            self.settings.image_fetch.retry_seconds, why.message())
        return items

    def _score_group(self, ctx: JobContext, name: str, group: list[ScoreInput]) -> int:
        scorer = self._scorers[name]
        ids = [g.sample_id for g in group]
        try:
            results = scorer.score(group)
            if len(results) != len(group):
                raise RuntimeError(f"scorer returned {len(results)} results for {len(group)} samples")
        except Exception as e:
            if isinstance(e, ProbeStaleError):  # the served weights changed: not the samples' fault
                logger.error("model %s: %s; its samples stay pending until a matching probe is active", name, e)
                self._probe_stale(ctx.sessions, name, e)
                self.forget(name)
                self._load_errors[name] = (time.monotonic(), str(e))
                with ctx.sessions() as s:
                    release_samples(s, ids)
                return 0
            logger.exception("model %s: scoring a batch of %d failed", name, len(group))
            with ctx.sessions() as s:
                failed = mark_failed(s, ids, f"{type(e).__name__}: {e}", max_attempts=self.max_attempts)
            if failed:
                metrics.SAMPLES_FAILED.labels(name).inc(failed)
                logger.error("model %s: %d samples failed %d times and were given up", name, failed, self.max_attempts)
            return 0
        rows = [res.score_row(item.sample_id, scorer.probe_version_id) for item, res in zip(group, results)]
        try:
            with ctx.sessions() as s:
                write_scores(s, ctx.worker, rows)
        except Exception:
            try:  # e.g. SQLite locked past its busy timeout: the claims return now, not at lease expiry
                with ctx.sessions() as s:
                    release_samples(s, ids)
            except Exception as e2:
                logger.warning("could not release %d claims (their lease expires): %s", len(ids), e2)
            raise
        metrics.SAMPLES_SCORED.labels(name).inc(len(rows))
        if self.settings.inputs.enabled:
            self._record_inputs(ctx, name, group, results)
        try:
            self._check_served(ctx, name, group, results)
        except Exception as e:  # the scores are stored; a failed comparison must not fail the batch
            report_internal_error(logger, f"served-model check of {name}", e)
        return len(rows)

    def _record_inputs(self, ctx: JobContext, name: str, group: list[ScoreInput], results: list[ScoreResult]) -> None:
        """Input features from the bytes in hand (before retention may purge them); a failure costs
        only these features, never the scores already written."""
        from monitor.inputs.record import feature_row, record_features

        try:
            rows = [feature_row(item, res) for item, res in zip(group, results)]
            with ctx.sessions() as s:
                record_features(s, rows)
        except Exception as e:
            logger.warning("model %s: input features of %d samples not recorded: %s", name, len(group), e)

    def _check_served(self, ctx: JobContext, name: str, group: list[ScoreInput], results: list[ScoreResult]) -> None:
        """Compare the served log-probabilities with the scorer's recompute; fire or resolve the alert."""
        from monitor.probe.scorer import captured_logprobs
        from monitor.probe.served_check import CHECKS, MismatchParams

        cfg = self.settings.served_check
        if not cfg.enabled:
            return
        check = CHECKS.get(name, MismatchParams.from_config(cfg))
        compared = 0
        for item, res in zip(group, results):
            check.observe_fingerprint(item.meta.get("system_fingerprint"))
            served, recomputed = captured_logprobs(item.meta), res.recomputed_logprobs
            if served is not None and recomputed is not None:
                check.observe_logprobs(served, recomputed)
                compared += 1
        if compared:
            with ctx.sessions() as s:
                report_served_mismatch(s, self.settings.alerts, check.verdict())
                s.commit()

