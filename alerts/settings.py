"""What ``alerts/`` reads of the settings: the ``alerts`` section and its channels, as protocols.

``alerts/`` imports only ``storage`` (DESIGN.md dependency direction), so it cannot name
``monitor.config``; ``monitor.config.AlertsConfig`` and ``ChannelConfig`` satisfy these protocols.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from alerts.rules import Rule

__all__ = ["AlertsSettings", "ChannelSettings"]


class ChannelSettings(Protocol):
    """One notification channel (``alerts.channels[]``)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def secret_env(self) -> str | None: ...
    @property
    def timeout_seconds(self) -> float: ...


class AlertsSettings(Protocol):
    """The ``alerts`` section."""

    @property
    def rules(self) -> Sequence[Rule]: ...
    @property
    def channels(self) -> Sequence[ChannelSettings]: ...
    @property
    def renotify_minutes(self) -> float: ...
    @property
    def no_data_minutes(self) -> float: ...
    @property
    def delivery_deadline_minutes(self) -> float: ...
    @property
    def backoff_initial_seconds(self) -> float: ...
    @property
    def backoff_max_seconds(self) -> float: ...
