"""Built-in alert rules: alerts the monitor raises by itself, outside the configured ``alerts.rules``.

``probe_stale`` and ``served_model_mismatch`` are not detector verdicts an operator tunes: they say
the monitor's own evidence is void. They still go through :func:`alerts.lifecycle.evaluate` (dedupe,
renotify, an outbox row per channel) with a config that holds only their rule (and no no-data rule),
so the operator's channels and renotify interval apply to them like to every other alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BuiltinRule", "BuiltinAlertsConfig", "builtin_config"]


@dataclass(frozen=True)
class BuiltinRule:
    """A rule whose detector name is the rule name; fires and resolves on the signal's status."""

    name: str
    severity: str = "critical"
    resolve_after: int = 1  # the raising code does its own hysteresis
    metric: str | None = None
    op: str = "<"
    threshold: float | None = None

    @property
    def detector(self) -> str:
        return self.name


@dataclass(frozen=True)
class BuiltinAlertsConfig:
    """The alerts section, with only one built-in rule (and no no-data rule)."""

    rules: tuple[Any, ...]
    channels: tuple[Any, ...] = ()
    renotify_minutes: float = 240.0
    delivery_deadline_minutes: float = 60.0
    no_data_minutes: float = 0.0


def builtin_config(rule: BuiltinRule, alerts_config: Any | None) -> BuiltinAlertsConfig:
    """``alerts_config``'s channels and timings (defaults without one) with ``rule`` as the only rule."""
    if alerts_config is None:
        return BuiltinAlertsConfig(rules=(rule,))
    return BuiltinAlertsConfig(
        rules=(rule,),
        channels=tuple(alerts_config.channels),
        renotify_minutes=float(alerts_config.renotify_minutes),
        delivery_deadline_minutes=float(alerts_config.delivery_deadline_minutes),
    )
