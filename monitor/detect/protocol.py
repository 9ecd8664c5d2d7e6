"""The one interface every sequential detector offers the runner, and the alarm bookkeeping they share.

A detector consumes observations one at a time (``update``), says whether it is ``firing`` now
(the alert stays open while it is, and resolves when it stops), round-trips its state through
plain JSON (``to_state`` / ``from_state``), and describes itself for the alert (``metrics``,
``summary``). The runner feeds every detector the same way and never branches on its kind.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Detector", "AlarmBookkeeping"]


@runtime_checkable
class Detector(Protocol):
    n: int  # observations consumed
    alarms: int  # times it started firing

    def update(self, *observation: Any) -> bool:
        """Consume one observation; True when the detector starts firing on it."""

    @property
    def firing(self) -> bool: ...

    def to_state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Detector: ...

    def metrics(self) -> dict[str, Any]:
        """Values for the alert (with CIs where there are any), the statistic and its threshold."""

    def summary(self, what: str) -> str:
        """One line for the alert: current level vs reference, statistic vs threshold."""


class AlarmBookkeeping:
    """``alarms`` / ``last_alarm_n`` kept in one place: call :meth:`_record` after each update."""

    n: int
    alarms: int
    last_alarm_n: int | None

    @property
    def firing(self) -> bool:  # pragma: no cover - every detector defines it
        raise NotImplementedError

    def _record(self, was_firing: bool) -> bool:
        crossed = self.firing and not was_firing
        if crossed:
            self.alarms += 1
            self.last_alarm_n = self.n
        return crossed
