"""Alembic environment: runs on the connection :func:`storage.db.upgrade` hands over.

Run directly (``alembic -x url=...``) it builds its own engine through :func:`storage.db.make_engine`.
SQLite gets batch mode so later ``ALTER`` migrations work there too.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import DateTime, TypeDecorator

from storage.models import Base

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Our timezone-aware DateTime subclass is rendered as the plain SQL type, so migrations
    # never import storage.models (which keeps changing after a migration is written).
    if type_ == "type" and isinstance(obj, TypeDecorator) and isinstance(obj.impl, DateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # batch mode for later ALTERs on SQLite; off while (re)generating the initial revision
        render_as_batch=config.attributes.get("render_as_batch", connection.dialect.name == "sqlite"),
        render_item=render_item,
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from storage.db import make_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: pass -x url=DATABASE_URL")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `vlmwatch db upgrade`")
run_migrations_online()
