"""ADWIN (river) as a persisted early-warning detector, its state plain JSON.

river's ADWIN is a compiled object with no public serialisation. Rather than pickling it (a
pickle in the database would make write access to the database code execution in the daemon),
the state keeps the values of ADWIN's current window — ADWIN's window is always the most recent
``width`` values it has seen — and a restart replays them into a fresh ADWIN (detections during
the replay are ignored). The replayed bucket boundaries may differ slightly from the original
ones, so a restart is a close approximation, not a bit-for-bit copy. The replay list is bounded:
at most :data:`MAX_WINDOW` values (rounded to 6 decimals) are kept, so ADWIN's window is
effectively capped at that width across runs.

As an alert, ADWIN's detection only starts a shift (``shifted``); the runner keeps it firing while
the window's mean differs from the reference mean by more than the resampled threshold for the
window's width (:func:`monitor.detect.label_free.mean_shift_threshold`), and clears it when the
level returns.

A stored state that holds a pickle payload (the former ``adwin`` key) is refused with
:class:`UntrustedStateError`; it is never unpickled.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["AdwinDetector", "UntrustedStateError", "MAX_WINDOW"]

MAX_WINDOW = 5_000  # values of ADWIN's window kept in the JSON state (replayed on restart)


class UntrustedStateError(ValueError):
    """A stored detector state carries a serialised object (pickle) instead of plain JSON."""


class AdwinDetector:
    """ADWIN with δ from tuning; ``update_many`` returns the positions where it detected a change."""

    def __init__(self, delta: float, state: dict[str, Any] | None = None) -> None:
        from river.drift import ADWIN

        state = state or {}
        if "adwin" in state:
            raise UntrustedStateError(
                "ADWIN state holds a pickle payload (key 'adwin'): refused, detector state is loaded from JSON only "
                "(the detector restarts from an empty window)")
        self.delta = float(delta)
        self.detections = 0
        self.n = 0
        self.mean_before: float | None = None
        self.mean_after: float | None = None
        self.shifted = False  # ADWIN found a change and the level has not returned to the reference since
        self._window: list[float] = []
        self._adwin = ADWIN(delta=self.delta)
        if state and float(state.get("delta", -1)) == self.delta:
            window = state.get("window", [])
            if not isinstance(window, list) or not all(isinstance(v, (int, float)) for v in window):
                raise UntrustedStateError("ADWIN state 'window' must be a JSON list of numbers")
            for v in window:  # replay the window into a fresh ADWIN; detections while replaying are not news
                self._adwin.update(float(v))
            self._window = [float(v) for v in window]
            self.detections = int(state.get("detections", 0))
            self.n = int(state.get("n", 0))
            self.mean_before = state.get("mean_before")
            self.mean_after = state.get("mean_after")
            self.shifted = bool(state.get("shifted", False))

    def update_many(self, values: Iterable[float]) -> list[int]:
        hits = []
        for i, v in enumerate(values):
            before = float(self._adwin.estimation)
            self._adwin.update(float(v))
            self._window.append(round(float(v), 6))
            self.n += 1
            if self._adwin.drift_detected:
                self.detections += 1
                self.shifted = True
                self.mean_before = before
                self.mean_after = float(self._adwin.estimation)
                hits.append(i)
        keep = min(self.width, MAX_WINDOW)
        self._window = self._window[-keep:] if keep else []
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
            "shifted": self.shifted, "window": list(self._window),
        }
