"""``vlmwatch db upgrade|current``: schema migrations."""

from __future__ import annotations

import argparse

from monitor.commands import add_actions, add_command

__all__ = ["register"]


def _upgrade(args: argparse.Namespace) -> int:
    from monitor.commands import CommandError, settings_from
    from monitor.commands._storage import connect
    from storage import db

    settings = settings_from(args)
    where = db.safe_url(settings.storage.url)
    try:
        with connect(settings) as engine:
            before = db.current_revision(engine)
        after = db.upgrade(settings.storage.url, settings.storage.password_env)
    except Exception as e:
        raise CommandError(f"cannot migrate database at {where}: {e}", code=1) from None
    if before == after:
        print(f"database at {where} is up to date (revision {after})")
    else:
        print(f"database at {where} migrated: {before or 'empty'} -> {after}")
    return 0


def _current(args: argparse.Namespace) -> int:
    from monitor.commands._storage import open_database
    from storage import db

    with open_database(args, require_schema=False) as database:
        rev = db.current_revision(database.engine)
    head = db.head_revision()
    state = "up to date" if rev == head else "needs `vlmwatch db upgrade`"
    print(f"database at {db.safe_url(database.settings.storage.url)}: revision {rev or 'none'} (head {head}, {state})")
    return 0 if rev == head else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_actions(subparsers, "db", help="database schema: upgrade (migrate to this version), current")
    add_command(sub, "upgrade", _upgrade, help="create or migrate the schema to this vlmwatch's version")
    add_command(sub, "current", _current, help="show the schema revision (exit 1 when not up to date)")
