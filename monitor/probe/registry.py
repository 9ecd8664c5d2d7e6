"""Probe versions in storage: register an artifact, activate it (one active per served model)."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from monitor.probe.artifact import ProbeArtifact
from storage.models import ProbeVersion, utcnow

__all__ = ["register_probe", "activate_probe", "active_probe", "ProbeNotFoundError"]

log = logging.getLogger(__name__)


class ProbeNotFoundError(LookupError):
    """No probe version matches; the message names the model and version."""


def register_probe(session: Session, served_name: str, artifact: ProbeArtifact, *, activate: bool = True) -> ProbeVersion:
    """Insert (or refresh) the ``probe_versions`` row for ``artifact``; optionally make it active.

    Registering the same version twice updates its row (path, metrics) instead of failing.
    The caller commits.
    """
    if not served_name:
        raise ValueError("a served model name is needed to register a probe")
    meta = artifact.meta
    row = session.scalars(
        select(ProbeVersion).where(ProbeVersion.model == served_name, ProbeVersion.version == meta.version)
    ).one_or_none()
    if row is None:
        row = ProbeVersion(model=served_name, version=meta.version)
        session.add(row)
    row.path = str(Path(artifact.path).resolve())
    row.model_fingerprint = meta.model_fingerprint
    row.layer = meta.layer
    row.pooling = meta.pooling
    row.threshold = meta.threshold
    row.metrics = meta.metrics
    session.flush()
    log.info("registered probe %s for model %s (id %d)", meta.version, served_name, row.id)
    if activate:
        activate_probe(session, served_name, meta.version)
    return row


def activate_probe(session: Session, served_name: str, version: str) -> ProbeVersion:
    """Make ``version`` the only active probe of ``served_name``. The caller commits."""
    # lock the model's rows so two concurrent activations cannot leave two active (Postgres);
    # SQLite serialises writers anyway.
    rows = session.scalars(
        select(ProbeVersion).where(ProbeVersion.model == served_name).with_for_update()
    ).all()
    target = next((r for r in rows if r.version == version), None)
    if target is None:
        known = ", ".join(sorted(r.version for r in rows)) or "none"
        raise ProbeNotFoundError(f"model {served_name!r} has no probe version {version!r} (registered: {known})")
    session.execute(
        update(ProbeVersion)
        .where(ProbeVersion.model == served_name, ProbeVersion.id != target.id, ProbeVersion.active.is_(True))
        .values(active=False)
    )
    target.active = True
    target.activated_at = utcnow()
    session.flush()
    log.info("activated probe %s for model %s", version, served_name)
    return target


def active_probe(session: Session, served_name: str) -> ProbeVersion | None:
    return session.scalars(
        select(ProbeVersion).where(ProbeVersion.model == served_name, ProbeVersion.active.is_(True))
    ).one_or_none()
