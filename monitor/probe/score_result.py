"""What a scorer returns per sample: :class:`ScoreResult` (no torch, no numpy at import).

Read by the score job (``monitor.daemon.scoring``: the ``scores`` row, the served-model check, the
input features); :class:`monitor.probe.scorer.ProbeScorer` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ScoreResult", "SCORE_COLUMNS"]

SCORE_COLUMNS = ("p_correct", "answer_prob", "attn_entropy", "attn_topk_mass", "latency_ms")
"""The fields that are columns of ``scores``."""


@dataclass(frozen=True)
class ScoreResult:
    """One scored sample."""

    p_correct: float  # calibrated probe score
    answer_prob: float | None = None  # from the captured log-probs, or the full pass
    attn_entropy: float | None = None  # nats, over the image tokens
    attn_topk_mass: float | None = None
    latency_ms: float | None = None  # the batch's wall time shared out per sample
    probe_version_id: int | None = None  # None: the scorer's probe_version_id
    vision_embedding: np.ndarray | None = None  # decoder input pooled over the image tokens (input drift)
    recomputed_logprobs: list[float] | None = None  # the monitor's log-probs of the served answer (served check)

    def score_row(self, sample_id: str, probe_version_id: int) -> dict[str, Any]:
        """The ``scores`` row of this result (``probe_version_id`` when the result names none)."""
        row: dict[str, Any] = {k: getattr(self, k) for k in SCORE_COLUMNS}
        row["p_correct"] = float(self.p_correct)
        pid = self.probe_version_id if self.probe_version_id is not None else probe_version_id
        return {**row, "sample_id": sample_id, "probe_version_id": int(pid)}
