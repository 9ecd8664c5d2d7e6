"""Alert rules: the one shape :func:`alerts.lifecycle.evaluate` reads, and the built-in rules.

Configured rules (``alerts.rules``, ``monitor.config.AlertRule``) and the built-in ones below have
the same fields. The built-in rules are alerts the monitor raises by itself: ``no_data`` (a detector
reports no evidence for ``alerts.no_data_minutes``), ``probe_stale`` (the served weights are not the
ones the active probe was trained on) and ``served_model_mismatch`` (the served model is not the
monitor's copy). Their detector name is the rule name; the code that raises them does its own
hysteresis, so they resolve on the first clear evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Rule", "BuiltinRule", "NO_DATA", "PROBE_STALE", "SERVED_MODEL_MISMATCH"]


class Rule(Protocol):
    """What the lifecycle reads of a rule."""

    @property
    def name(self) -> str: ...  # part of the fingerprint
    @property
    def detector(self) -> str: ...  # the signals it reads (``metric``: a window metric against ``threshold``)
    @property
    def severity(self) -> str: ...
    @property
    def metric(self) -> str | None: ...
    @property
    def op(self) -> str: ...
    @property
    def threshold(self) -> float | None: ...
    @property
    def source(self) -> str | None: ...  # detector=metric: the window source it reads
    @property
    def resolve_after(self) -> int: ...  # consecutive clear evaluations before resolving


@dataclass(frozen=True)
class BuiltinRule:
    """A rule the monitor raises by itself (see the module doc)."""

    name: str
    severity: str = "critical"
    op: str = "<"
    resolve_after: int = 1
    metric: str | None = None
    threshold: float | None = None
    source: str | None = None

    @property
    def detector(self) -> str:
        return self.name


NO_DATA = BuiltinRule("no_data", severity="warning", op=">")
PROBE_STALE = BuiltinRule("probe_stale")
SERVED_MODEL_MISMATCH = BuiltinRule("served_model_mismatch")
