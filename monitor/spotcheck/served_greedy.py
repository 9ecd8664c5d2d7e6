"""The spot checks' hook into the served-model check: the monitor's greedy answer vs the served one.

A sample served greedily (the request said ``temperature: 0``) has exactly one right answer for
the served weights; the monitor decodes its own greedy answer with the request's token cap
(``max_tokens`` / ``max_completion_tokens``, else ``spotcheck.max_new_tokens``) and feeds the
comparison to the model's :class:`~monitor.probe.served_check.ServedModelCheck`. Sampled answers
say nothing here and are left out. The hook never fails a spot check: its errors are reported and
swallowed.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from monitor.config import Settings
from storage.failopen import swallowed
from storage.models import Sample

__all__ = ["served_greedily", "check_greedy_answer"]

log = logging.getLogger(__name__)


def served_greedily(meta: dict[str, Any] | None) -> bool:
    t = (meta or {}).get("temperature")
    return isinstance(t, (int, float)) and not isinstance(t, bool) and t == 0


def _token_cap(meta: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        v = meta.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return default


def check_greedy_answer(adapter: Any, image: Any, cand: Any, settings: Settings,
                        sessions: sessionmaker[Session]) -> bool | None:
    """Compare ``cand``'s served answer with the monitor's greedy one when it was served greedily;
    fire or resolve ``served_model_mismatch``. Returns whether they differ (None: not compared)."""
    cfg = settings.served_check
    if not cfg.enabled:
        return None
    with swallowed(f"greedy served-model check of sample {cand.id}", log):
        from alerts.builtin import report_served_mismatch
        from monitor.probe.greedy import greedy_answers
        from monitor.probe.served_check import CHECKS, MismatchParams

        with sessions() as s:
            meta = s.scalar(select(Sample.meta).where(Sample.id == cand.id)) or {}
        if not served_greedily(meta):
            return None
        cap = _token_cap(meta, settings.spotcheck.max_new_tokens)
        greedy = greedy_answers(adapter, [adapter.encode(image, cand.prompt)], max_new_tokens=cap)[0]
        check = CHECKS.get(cand.model, MismatchParams.from_config(cfg))
        differ = check.observe_greedy(cand.answer, greedy)
        if differ:
            log.info("sample %s: served %r, the monitor's greedy answer is %r", cand.id, cand.answer, greedy)
        with sessions() as s:
            report_served_mismatch(s, settings.alerts, check.verdict())
            s.commit()
        return differ
    return None
