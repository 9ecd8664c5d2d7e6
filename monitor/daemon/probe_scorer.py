"""The default scorer factory: the served model's probe (``monitor.probe.factory.make_scorer``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from monitor.config import ModelEntry, Settings

__all__ = ["load_probe_scorer"]


def load_probe_scorer(name: str, entry: ModelEntry, settings: Settings, sessions: sessionmaker[Session]) -> Any:
    """Load ``entry``'s model and its probe (pinned in config, else the active one in storage).

    Raises ``LookupError`` (no probe yet) or ``ProbeStaleError`` (the served weights changed);
    the score job then leaves the model's samples pending and retries later.
    """
    from monitor.probe.factory import make_scorer

    return make_scorer(name, entry, settings, sessions)
