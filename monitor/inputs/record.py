"""Record the input features of scored samples (called by the score job, right after its scores)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from monitor.inputs.features import image_features, pack_embedding, text_features
from monitor.probe.score_result import ScoreResult
from storage.models import InputFeature, utcnow

__all__ = ["FeatureSource", "feature_row", "record_features"]

logger = logging.getLogger(__name__)


class FeatureSource(Protocol):
    """What a feature row is made from (``monitor.daemon.scoring.ScoreInput`` fits)."""

    sample_id: str
    model: str
    prompt: str
    answer: str
    image: bytes | None
    meta: dict[str, Any]
    route: str
    ts: datetime | None


def feature_row(item: FeatureSource, result: ScoreResult) -> dict[str, Any]:
    """An ``input_features`` row for one scored item (with ``result.vision_embedding`` when it has one)."""
    feats = text_features(item.prompt, item.answer, item.route, item.meta)
    if item.image is not None:
        try:
            feats.update(image_features(item.image))
        except ValueError as e:  # the scorer read it, so this is rare: keep the text features
            logger.warning("sample %s: no image features: %s", item.sample_id, e)
            feats["format"] = "unreadable"
    else:
        feats["format"] = "none"
    emb = result.vision_embedding
    return {"sample_id": item.sample_id, "model": item.model, "ts": item.ts or utcnow(), "features": feats,
            "embedding": pack_embedding(emb) if emb is not None else None}


def record_features(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert feature rows (a row that exists already, from a re-run, is kept); commits. Returns rows written."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise RuntimeError(f"unsupported database {dialect!r}")
    now = utcnow()
    stmt = insert(InputFeature.__table__).on_conflict_do_nothing()
    res = session.execute(stmt, [{**r, "created_at": now} for r in rows])
    session.commit()
    return int(res.rowcount or 0) if res.rowcount and res.rowcount > 0 else len(rows)
