"""``vlmwatch db upgrade|current``: schema migrations."""

from __future__ import annotations

import argparse

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
    p = subparsers.add_parser("db", help="database schema: upgrade (migrate to this version), current")
    sub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = sub.add_parser("upgrade", help="create or migrate the schema to this vlmwatch's version")
    up.set_defaults(func=_upgrade)
    cur = sub.add_parser("current", help="show the schema revision (exit 1 when not up to date)")
    cur.set_defaults(func=_current)
