"""Shared start-up for commands that use the database: config, engine, schema check.

Refusals (bad config, unmigrated database) end the command with exit code 2 and one message.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from monitor.config import Settings

__all__ = ["open_database"]


def open_database(args: argparse.Namespace, *, require_schema: bool = True) -> tuple[Settings, Engine]:
    """Load the config named by ``--config`` and open its database (migrated unless told otherwise)."""
    from monitor.config import load_config
    from storage import db

    settings = load_config(args.config)
    engine = db.engine_for(settings.storage)
    if require_schema:
        try:
            db.require_schema(engine)
        except db.SchemaError as e:
            engine.dispose()
            print(f"vlmwatch: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    return settings, engine
