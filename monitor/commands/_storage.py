"""Shared start-up for commands that use the database: config, engine, schema check, clean-up.

``with open_database(args) as database:`` loads the config named by ``--config``, opens its
database, refuses an unmigrated one (:class:`~monitor.commands.CommandError`, exit code 2) and
disposes of the engine when the block ends, however it ends.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.commands import CommandError, settings_from

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from monitor.config import Settings

__all__ = ["Database", "connect", "open_database"]


@dataclass(frozen=True)
class Database:
    """What a command works with: its settings, the engine and a session factory on it."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]


@contextmanager
def connect(settings: Settings) -> Iterator[Engine]:
    """The engine of ``settings.storage``, disposed of when the block ends (no schema check)."""
    from storage import db

    engine = db.engine_for(settings.storage)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def open_database(args: argparse.Namespace, *, require_schema: bool = True,
                  command: str | None = None) -> Iterator[Database]:
    """The config named by ``--config`` and its database, migrated unless ``require_schema`` is false.

    ``command`` names the command in the refusal (``vlmwatch COMMAND: ...``; default ``vlmwatch: ...``).
    """
    from storage import db

    settings = settings_from(args)
    with connect(settings) as engine:
        if require_schema:
            try:
                db.require_schema(engine)
            except db.SchemaError as e:
                raise CommandError(str(e), command=command) from None
        yield Database(settings, engine, db.session_factory(engine))
