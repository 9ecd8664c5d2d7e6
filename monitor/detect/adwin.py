"""ADWIN (river) as a persisted early-warning detector.

river's ADWIN is a compiled object; its full state is pickled into the JSON detector state
(base64), so a restart continues with the same window instead of relearning it.
"""

from __future__ import annotations

import base64
import pickle
from typing import Any, Iterable

__all__ = ["AdwinDetector"]


class AdwinDetector:
    """ADWIN with δ from tuning; ``update_many`` returns the positions where it detected a change."""

    def __init__(self, delta: float, state: dict[str, Any] | None = None) -> None:
        from river.drift import ADWIN

        self.delta = float(delta)
        self.detections = 0
        self.n = 0
        self.mean_before: float | None = None
        self.mean_after: float | None = None
        blob = (state or {}).get("adwin")
        if blob and float((state or {}).get("delta", -1)) == self.delta:
            # trusted input: our own detector_states row, written by to_state below
            self._adwin = pickle.loads(base64.b64decode(blob))  # noqa: S301
            self.detections = int(state.get("detections", 0))  # type: ignore[union-attr]
            self.n = int(state.get("n", 0))  # type: ignore[union-attr]
            self.mean_before = state.get("mean_before")  # type: ignore[union-attr]
            self.mean_after = state.get("mean_after")  # type: ignore[union-attr]
        else:
            self._adwin = ADWIN(delta=self.delta)

    def update_many(self, values: Iterable[float]) -> list[int]:
        hits = []
        for i, v in enumerate(values):
            before = float(self._adwin.estimation)
            self._adwin.update(float(v))
            self.n += 1
            if self._adwin.drift_detected:
                self.detections += 1
                self.mean_before = before
                self.mean_after = float(self._adwin.estimation)
                hits.append(i)
        return hits

    @property
    def estimation(self) -> float:
        return float(self._adwin.estimation)

    @property
    def width(self) -> int:
        return int(self._adwin.width)

    def to_state(self) -> dict[str, Any]:
        return {
            "delta": self.delta, "detections": self.detections, "n": self.n, "width": self.width,
            "estimation": self.estimation, "mean_before": self.mean_before, "mean_after": self.mean_after,
            "adwin": base64.b64encode(pickle.dumps(self._adwin)).decode(),
        }
