"""Builds the daemon's scorer for one served model: the ``ScorerFactory`` of ``monitor.daemon``.

Order matters: the served folder's fingerprint is checked against the probe *before* the model
is loaded, so a stale model costs a hash (cached by file size and mtime), not a model load, each
time the daemon retries it. The score job turns the ``ProbeStaleError`` into the
``probe_stale`` alert and resolves it on the first load whose probe matches again.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from monitor.adapter.shared import folder_fingerprint, shared_vlm
from monitor.config import ModelEntry, Settings
from monitor.probe.artifact import load_artifact
from monitor.probe.registry import active_probe, register_probe
from monitor.probe.scorer import ProbeScorer, ScorerOptions
from monitor.probe.stale import check_fresh

__all__ = ["make_scorer", "scorer_options"]


def scorer_options(settings: Settings) -> ScorerOptions:
    sc = settings.scoring
    return ScorerOptions(
        batch_size=sc.batch_size,
        head_backend=sc.head_backend,
        full_pass=sc.full_pass,
        attention_signals=sc.attention_signals,
        topk_share=sc.attention_topk_share,
        device=sc.device,
        image_cache_size=sc.image_cache_size,
        recompute_share=settings.served_check.recompute_share if settings.served_check.enabled else 0.0,
    )


def make_scorer(name: str, entry: ModelEntry, settings: Settings, sessions: sessionmaker[Session]) -> ProbeScorer:
    """Load the probe (``entry.probe`` or the active one in storage) and the model; refuse a stale probe.

    Raises ``LookupError`` when the model has no probe, :class:`~monitor.probe.stale.ProbeStaleError`
    when the served weights are not the probe's model.
    """
    with sessions() as s:
        if entry.probe:
            artifact = load_artifact(entry.probe)
            row = register_probe(s, name, artifact, activate=True)  # the config pins this probe
            s.commit()
        else:
            row = active_probe(s, name)
            if row is None:
                raise LookupError(
                    f"model {name!r} has no active probe: run `vlmwatch probe train ... --register --served-name {name}`"
                )
            artifact = load_artifact(row.path)
        row_id, version = row.id, row.version
    check_fresh(name, version, artifact.meta.model_fingerprint, folder_fingerprint(entry.path))
    # the spot checks use the same copy (monitor.spotcheck.job.load_adapters): one model in memory
    adapter = shared_vlm(entry.path, device=settings.scoring.device, dtype=settings.scoring.dtype)

    def current() -> str:
        return folder_fingerprint(entry.path)

    return ProbeScorer(
        adapter, artifact, served_name=name, probe_version_id=row_id, options=scorer_options(settings),
        current_fingerprint=current,
    )
