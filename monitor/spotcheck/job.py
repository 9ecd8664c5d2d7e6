"""The daemon's spot-check run: choose scored samples, check them, store results and evidence.

``run_spotcheck(sessions, settings, ...)`` (docs/CONTRACTS.md, "Spot-check entry points"):

1. Candidates: samples scored by their model's active probe whose ``spotcheck_status`` is
   ``pending``, oldest first, at most ``spotcheck.max_candidates_per_run``, *claimed* like the
   score job claims samples (``monitor.daemon.leases``): ``FOR UPDATE SKIP LOCKED`` on PostgreSQL
   and a lease (``samples.lease_owner`` / ``lease_expires_at``, free once a sample is scored;
   ``scoring.lease_seconds``, renewed while the run works). So with N daemons each candidate is
   decided by exactly one draw, and the inclusion probability recorded is the true one.
2. Budget: the compute spent on spot checks in the last hour (``spot_checks.compute_seconds``:
   device seconds on GPU, wall seconds on CPU, every daemon's) against
   ``spotcheck.gpu_seconds_per_hour``. The inclusion probabilities are scaled so the expected
   hourly spend fits; the spend is read again from the database before each check, so once the
   hour's budget is spent by all daemons together the run decides nothing more (undecided samples
   stay ``pending``, their claim released) and says so. Across N daemons the hour can overshoot by
   at most the checks in flight (one per daemon).
3. Each candidate is drawn with its inclusion probability (``monitor.spotcheck.policy``), at
   ``spotcheck.rate`` or, while it falls in its probe version's reference period and that
   version's spot-check reference is incomplete (:func:`_in_reference_period`), at
   ``max(rate, spotcheck.reference_rate)``, so the reference gets the checks its detectors arm on;
   both scaled by the one budget scale, the probability recorded is the one drawn with:
   not drawn -> ``skipped``; drawn -> checked, then ``done`` with a ``spot_checks`` row (its
   inclusion probability and reason) and a ``labels`` row, source ``self_consistency``,
   ``correct`` = :func:`monitor.spotcheck.answers.spotcheck_correct` (agreement >= 0.5, the one
   definition the evidence loader uses too), ``value`` = agreement.
4. Answer equivalence (:func:`equivalence_for`): a SynPOPE sample (``meta.task`` one of
   :data:`monitor.synpope.judges.TASK_JUDGES` and ``meta.objects`` its scene, as ``synpope
   generate`` writes) groups by its task's judge (``answer_key``); any other free text by
   ``spotcheck.equivalence``: its content words by default, or a local sentence-embedding model
   (``kind: embedding``, :mod:`monitor.spotcheck.embedding_equivalence`), loaded before any
   candidate is claimed, so a folder that does not load fails the run, never a check.
5. A greedily served candidate's answer is compared with the monitor's greedy answer
   (:mod:`monitor.spotcheck.served_greedy`, the ``served_model_mismatch`` check).

Writes are conditional on the sample still being ``pending`` and claimed by this worker, so two
workers never store two results for one sample; a worker whose lease expired mid-check loses
the sample to the next claimant's draw. A run stopped by the daemon (``should_stop``) or by its
time budget leaves the rest ``pending`` and releases their claim.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from monitor.config import Settings
from monitor.spotcheck.answers import spotcheck_correct
from monitor.spotcheck.policy import Decision, SelectionPolicy
from monitor.spotcheck.served_greedy import check_greedy_answer
from storage.failopen import report_internal_error
from storage.models import Image, Label, ProbeVersion, Sample, Score, SpotCheck, utcnow

__all__ = ["SpotcheckRun", "run_spotcheck", "load_adapters", "prompt_inputs", "free_text_equivalence",
           "equivalence_for"]

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
COST_HISTORY = 50  # recent checks averaged for the expected cost of one check
_LOAD_FAILED: dict[tuple[str, str], float] = {}
RETRY_LOAD_SECONDS = 60.0


@dataclass
class SpotcheckRun:
    """What one run did (``processed`` = checks stored)."""

    candidates: int = 0
    processed: int = 0
    skipped: int = 0  # drawn out by the policy
    undecided: int = 0  # left pending (budget, stop request, model not loadable)
    missing_image: int = 0  # image bytes purged or unreadable: marked skipped
    failed: int = 0  # the check raised (reported as an internal error): marked skipped
    budget_exhausted: bool = False
    budget_scale: float = 1.0
    spent_last_hour: float = 0.0
    compute_seconds: float = 0.0
    stopped: str | None = None  # budget | stop | time | oom
    reference_period: int = 0  # candidates drawn at the reference-period rate
    by_model: dict[str, int] = field(default_factory=dict)
    # (sample id, drawn, inclusion probability) of every candidate this run decided and recorded
    decisions: list[tuple[str, bool, float]] = field(default_factory=list)


def load_adapters(settings: Settings, names: set[str]) -> dict[str, Any]:
    """Adapters for the served models in ``names``: the process's shared copies, the scorer's too
    (:func:`monitor.adapter.shared.shared_vlm`); a model that failed to load is retried later."""
    from monitor.adapter.shared import shared_vlm

    out: dict[str, Any] = {}
    for name in sorted(names):
        entry = settings.models.get(name)
        if entry is None:
            continue
        key = (name, entry.path)
        failed = _LOAD_FAILED.get(key)
        if failed is not None and time.monotonic() - failed < RETRY_LOAD_SECONDS:
            continue
        try:
            out[name] = shared_vlm(entry.path, device=settings.scoring.device, dtype=settings.scoring.dtype)
        except Exception as e:  # a model that cannot load leaves its samples pending
            _LOAD_FAILED[key] = time.monotonic()
            log.warning("spot checks for %s skipped: cannot load %s: %s", name, entry.path, e)
            continue
        _LOAD_FAILED.pop(key, None)
    return out


def free_text_equivalence(settings: Settings) -> Any:
    """The configured equivalence of free text no task judge knows: None for ``content_words``
    (:func:`monitor.spotcheck.check.run_spot_check`'s default), else the embedding model's
    grouping (loaded once per process; :class:`~monitor.spotcheck.embedding_equivalence.EmbeddingModelError`
    names the folder when it cannot be loaded)."""
    eq = settings.spotcheck.equivalence
    if eq.kind == "content_words":
        return None
    from monitor.spotcheck.embedding_equivalence import load_embedding_equivalence

    return load_embedding_equivalence(eq.path, eq.threshold)


def equivalence_for(meta: Mapping[str, Any] | None, free_text: Any) -> Any:
    """A SynPOPE sample's task judge key (``meta.task`` a SynPOPE task, ``meta.objects`` its scene),
    else ``free_text`` (:func:`free_text_equivalence`)."""
    task = (meta or {}).get("task") if isinstance(meta, Mapping) else None
    if isinstance(task, str) and isinstance(meta.get("objects"), list):  # type: ignore[union-attr]
        from functools import partial

        from monitor.synpope.judges import TASK_JUDGES, answer_key

        if task in TASK_JUDGES:
            return partial(answer_key, task)
    return free_text


def prompt_inputs(adapter: Any, image: Any, prompt: str) -> tuple[Any, dict[str, Any]]:
    """``input_ids`` [1, T] ending where the answer starts, and the model kwargs for the prefill."""
    enc = adapter.encode(image, prompt, None)
    end = enc.prompt_last + 1
    ids = enc.input_ids[:end].unsqueeze(0)
    extra = dict(enc.extra)
    for name, value in enc.token_inputs.items():  # e.g. PaliGemma's token_type_ids
        extra[name] = value[:end].unsqueeze(0)
    return ids, extra


def _claim_candidates(session: Session, models: set[str], limit: int, worker: str, lease_seconds: float,
                      now: datetime) -> list[Any]:
    """Claim up to ``limit`` pending candidates (oldest first) for ``worker`` and commit the lease."""
    ids_q = (
        select(Sample.id)
        .join(Score, Score.sample_id == Sample.id)
        .join(ProbeVersion, (ProbeVersion.id == Score.probe_version_id) & ProbeVersion.active.is_(True))
        .where(Sample.status == "scored", Sample.spotcheck_status == "pending", Sample.model.in_(sorted(models)))
        .where(ProbeVersion.model == Sample.model)
        .where(or_(Sample.lease_expires_at.is_(None), Sample.lease_expires_at < now))
        .order_by(Sample.ts, Sample.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Sample)
    )
    ids = list(session.scalars(ids_q))
    if not ids:
        session.rollback()
        return []
    session.execute(
        update(Sample).where(Sample.id.in_(ids), Sample.spotcheck_status == "pending")
        .values(lease_owner=worker, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    session.commit()
    q = (
        select(Sample.id, Sample.model, Sample.ts, Sample.prompt, Sample.answer, Sample.image_sha256, Sample.meta,
               Score.p_correct, ProbeVersion.threshold, ProbeVersion.id.label("pv_id"))  # fmt: skip
        .join(Score, Score.sample_id == Sample.id)
        .join(ProbeVersion, (ProbeVersion.id == Score.probe_version_id) & ProbeVersion.active.is_(True))
        .where(Sample.id.in_(ids), Sample.lease_owner == worker, ProbeVersion.model == Sample.model)
        .order_by(Sample.ts, Sample.id)
    )
    return list(session.execute(q).all())


def _extend_claim(session: Session, ids: list[str], worker: str, until: datetime) -> None:
    session.execute(
        update(Sample).where(Sample.id.in_(ids), Sample.lease_owner == worker, Sample.spotcheck_status == "pending")
        .values(lease_expires_at=until).execution_options(synchronize_session=False)
    )  # fmt: skip


def _release_claim(session: Session, ids: list[str], worker: str) -> None:
    session.execute(
        update(Sample).where(Sample.id.in_(ids), Sample.lease_owner == worker, Sample.spotcheck_status == "pending")
        .values(lease_owner=None, lease_expires_at=None).execution_options(synchronize_session=False)
    )  # fmt: skip


def _in_reference_period(session: Session, settings: Settings, cands: list[Any]) -> np.ndarray:
    """Which candidates fall in their probe version's reference period (its first
    ``calibration.reference_n`` scored samples, :func:`monitor.calibration.reference.reference_period_end`)
    while its active reference is the default one and its spot checks are not yet complete."""
    from monitor.calibration.reference import active_reference, reference_period_end  # imports this package

    out = np.zeros(len(cands), dtype=bool)
    for pv_id in sorted({c.pv_id for c in cands}):
        ref = active_reference(session, pv_id)
        if ref is not None and (ref.pinned or ((ref.stats or {}).get("self_consistency") or {}).get("complete")):
            continue
        pv = session.get(ProbeVersion, pv_id)
        since = pv.activated_at or pv.created_at
        end = reference_period_end(session, pv, int(settings.calibration.reference_n))
        for i, c in enumerate(cands):
            out[i] |= c.pv_id == pv_id and c.ts >= since and (end is None or c.ts <= end)
    return out


def _spent_last_hour(session: Session, now: datetime) -> float:
    """Seconds every daemon spent on spot checks in the hour before ``now``."""
    spent = session.scalar(
        select(func.coalesce(func.sum(SpotCheck.compute_seconds), 0.0)).where(SpotCheck.created_at >= now - HOUR)
    )
    return float(spent or 0.0)


def _cost_state(session: Session, now: datetime, models: set[str], prior: float) -> tuple[float, float, float]:
    """(seconds spent in the last hour, mean seconds per check, candidates scored in the last hour)."""
    since = now - HOUR
    spent = _spent_last_hour(session, now)
    recent = session.scalars(select(SpotCheck.compute_seconds).order_by(SpotCheck.id.desc()).limit(COST_HISTORY)).all()
    per_check = float(np.mean(recent)) if recent else prior
    arrivals = session.scalar(
        select(func.count(Score.id)).join(Sample, Sample.id == Score.sample_id)
        .where(Score.created_at >= since, Sample.model.in_(sorted(models)))
    )  # fmt: skip
    return spent, per_check, float(arrivals or 0)


def _load_image(session: Session, sha: str | None) -> Any:
    from PIL import Image as PILImage

    if sha is None:
        return None
    data = session.scalar(select(Image.data).where(Image.sha256 == sha))
    if data is None:
        raise LookupError(f"image {sha[:12]} has no bytes (purged or never fetched)")
    return PILImage.open(io.BytesIO(data)).convert("RGB")


def _mark(session: Session, sample_id: str, status: str, worker: str) -> bool:
    """Record the decision of a sample this worker still holds; False when it lost the claim."""
    res = session.execute(
        update(Sample).where(Sample.id == sample_id, Sample.spotcheck_status == "pending", Sample.lease_owner == worker)
        .values(spotcheck_status=status, lease_owner=None, lease_expires_at=None)
    )  # fmt: skip
    return res.rowcount == 1


def run_spotcheck(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    adapters: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    budget: float | None = None,
    worker: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    rng: np.random.Generator | None = None,
) -> SpotcheckRun:
    """One spot-check run. ``budget``: wall seconds this run may take new work for (None: no limit);
    ``worker``: the claim owner (default: this process)."""
    cfg = settings.spotcheck
    now = now or utcnow()
    rng = rng or np.random.default_rng()
    worker = worker or f"spotcheck-{os.getpid()}"
    lease = float(settings.scoring.lease_seconds)
    started = time.monotonic()
    models = set(adapters) if adapters is not None else set(settings.models)
    run = SpotcheckRun()
    if not models:
        return run
    policy = SelectionPolicy(cfg.rate, cfg.uniform_share, cfg.boundary_width, cfg.gpu_seconds_per_hour)
    free_text_equivalence(settings)  # loaded before any claim: a model that does not load fails the run here
    with sessions() as s:
        spent, per_check, arrivals = _cost_state(s, now, models, cfg.seconds_per_check_prior)
        cands = _claim_candidates(s, models, cfg.max_candidates_per_run, worker, lease, now)
        in_ref = _in_reference_period(s, settings, cands) if cands else np.zeros(0, dtype=bool)
    run.candidates, run.spent_last_hour, run.reference_period = len(cands), spent, int(in_ref.sum())
    if not cands:
        return run
    groups = [(policy, ~in_ref), (replace(policy, rate=max(cfg.rate, cfg.reference_rate)), in_ref)]
    try:
        _decide_and_check(sessions, settings, groups, cands, run, adapters, now, rng, worker, budget, started,
                          should_stop, per_check, arrivals)
    finally:  # whatever this run did not decide goes back to the queue at once
        with sessions.begin() as s:
            _release_claim(s, [c.id for c in cands], worker)
    if run.stopped == "budget":
        log.info("spot-check budget reached (%.1f of %.1f s in the last hour): %d samples left pending",
                 run.spent_last_hour + run.compute_seconds, cfg.gpu_seconds_per_hour, run.undecided)  # fmt: skip
    log.debug("spot checks (worker %s): %s", worker, run)
    return run


def _decide(groups: list[tuple[SelectionPolicy, np.ndarray]], scores: np.ndarray, thresholds: np.ndarray,
            rng: np.random.Generator, scale: float) -> list[Decision]:
    """Each group of candidates drawn with its own policy (rate), all under the one budget ``scale``."""
    out: list[Decision | None] = [None] * scores.size
    for pol, mask in groups:
        idx = np.flatnonzero(mask)
        for j, d in zip(idx, pol.decide(scores[idx], thresholds[idx], rng, scale=scale)):
            out[j] = replace(d, index=int(j))
    return [d for d in out if d is not None]


def _decide_and_check(sessions: sessionmaker[Session], settings: Settings,
                      groups: list[tuple[SelectionPolicy, np.ndarray]], cands: list[Any],
                      run: SpotcheckRun, adapters: Mapping[str, Any] | None, now: datetime, rng: np.random.Generator,
                      worker: str, budget: float | None, started: float, should_stop: Callable[[], bool] | None,
                      per_check: float, arrivals: float) -> None:
    cfg = settings.spotcheck
    lease = float(settings.scoring.lease_seconds)
    scores = np.array([np.nan if c.p_correct is None else c.p_correct for c in cands])
    thresholds = np.array([c.threshold for c in cands])
    pi0 = np.zeros(len(cands))
    for pol, mask in groups:
        pi0[mask] = pol.probabilities(scores[mask], thresholds[mask])[0]
    run.budget_scale = groups[0][0].budget_scale(
        candidates_per_hour=arrivals, seconds_per_check=per_check, spent_last_hour=run.spent_last_hour,
        mean_unscaled_pi=float(pi0.mean()),
    )
    if run.budget_scale <= 0.0:
        run.budget_exhausted, run.stopped, run.undecided = True, "budget", len(cands)
        return
    if adapters is None:
        adapters = load_adapters(settings, {c.model for c in cands})
    decisions = _decide(groups, scores, thresholds, rng, run.budget_scale)
    handled = 0  # candidates no longer pending after this run (by us or another worker)
    renewed = time.monotonic()

    def record(cand: Any, status: str, drawn: bool, pi: float) -> bool:
        with sessions.begin() as s:
            ok = _mark(s, cand.id, status, worker)
        if ok:
            run.decisions.append((cand.id, drawn, pi))
        return ok

    for i, (cand, dec) in enumerate(zip(cands, decisions)):
        if should_stop is not None and should_stop():
            run.stopped = "stop"
        elif budget is not None and time.monotonic() - started >= budget:
            run.stopped = "time"
        elif dec.selected:  # every daemon's spend, read again before each check
            with sessions() as s:
                if _spent_last_hour(s, now) >= cfg.gpu_seconds_per_hour:
                    run.stopped, run.budget_exhausted = "budget", True
        if run.stopped:
            break
        if time.monotonic() - renewed > lease / 2:  # keep the claim on what is left
            with sessions.begin() as s:
                _extend_claim(s, [c.id for c in cands[i:]], worker, utcnow() + timedelta(seconds=lease))
            renewed = time.monotonic()
        if not dec.selected:
            run.skipped += int(record(cand, "skipped", False, dec.inclusion_prob))
            handled += 1
            continue
        ad = adapters.get(cand.model)
        if ad is None:  # model not loadable now: the sample stays pending
            continue
        try:
            with sessions() as s:
                image = _load_image(s, cand.image_sha256)
        except (LookupError, OSError) as e:  # purged bytes, or bytes PIL cannot read
            log.warning("spot check of %s skipped: %s", cand.id, e)
            with sessions.begin() as s:
                run.missing_image += int(_mark(s, cand.id, "skipped", worker))
            handled += 1
            continue
        try:
            result = _check(ad, image, cand, settings)
        except Exception as e:
            from monitor.spotcheck.sampler import is_oom

            if is_oom(e):  # even one stream did not fit: memory is busy, try again next run
                log.warning("spot check of %s left pending: out of memory (%s)", cand.id, e)
                run.stopped = "oom"
                break
            # a check that raises would raise again on every run: record it and move on
            report_internal_error(log, f"spot check of sample {cand.id}", e)
            with sessions.begin() as s:
                run.failed += int(_mark(s, cand.id, "skipped", worker))
            handled += 1
            continue
        run.compute_seconds += result.compute_seconds
        handled += 1
        check_greedy_answer(ad, image, cand, settings, sessions)
        with sessions.begin() as s:
            if not _mark(s, cand.id, "done", worker):
                continue  # the claim expired and another worker took the sample
            st = result.stats
            s.add(SpotCheck(
                sample_id=cand.id, k=result.k, one_token=result.one_token, agreement=st.agreement,
                entropy=st.entropy, majority_answer=st.majority_group, groups=st.groups, support=result.support,
                inclusion_prob=dec.inclusion_prob, reason=dec.reason, compute_seconds=result.compute_seconds,
                created_at=now,
            ))  # fmt: skip
            s.add(Label(sample_id=cand.id, correct=spotcheck_correct(st.agreement), source="self_consistency",
                        value=st.agreement, created_at=now))  # fmt: skip
        run.decisions.append((cand.id, True, dec.inclusion_prob))
        run.processed += 1
        run.by_model[cand.model] = run.by_model.get(cand.model, 0) + 1
    run.undecided = len(cands) - handled


def _check(ad: Any, image: Any, cand: Any, settings: Settings) -> Any:
    from monitor.adapter.generation import eos_ids
    from monitor.spotcheck.check import run_spot_check, stream_seeds

    cfg = settings.spotcheck
    equivalence = equivalence_for(getattr(cand, "meta", None), free_text_equivalence(settings))  # cached after the first
    ids, extra = prompt_inputs(ad, image, cand.prompt)
    max_streams = cfg.max_streams or None
    with ad.lock:
        return run_spot_check(
            ad.model, ad.tokenizer, ids, extra, cand.answer, k=cfg.k, temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens, seeds=stream_seeds(cand.id, cfg.k, cfg.seed),
            eos_token_ids=sorted(eos_ids(ad.model, ad.tokenizer)), max_streams=max_streams, equivalence=equivalence,
        )  # fmt: skip
