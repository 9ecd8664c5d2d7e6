"""Engines, sessions and schema migrations.

SQLite is the embedded default and gets WAL, foreign keys and a busy timeout on every
connection; PostgreSQL is reached through psycopg 3. The database password never sits in the
URL of a config file: when the environment variable named by ``storage.password_env`` is set it
is injected here; :func:`engine_for` is how the product opens every engine from its storage config.
Engines hide bound parameters in their error messages (``hide_parameters``): a failed INSERT must
not put a prompt or an answer into a log. Migrations are Alembic's, run programmatically from the scripts packaged in
``storage/migrations`` (so ``vlmwatch db upgrade`` works from any working directory).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "DEFAULT_PASSWORD_ENV",
    "MIGRATIONS_DIR",
    "SchemaError",
    "alembic_config",
    "current_revision",
    "engine_for",
    "head_revision",
    "make_engine",
    "require_schema",
    "resolve_url",
    "safe_url",
    "session_factory",
    "upgrade",
]

log = logging.getLogger(__name__)

DEFAULT_PASSWORD_ENV = "VLMWATCH_DB_PASSWORD"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
SQLITE_BUSY_TIMEOUT_MS = 30_000  # writers wait this long for the WAL write lock before failing


class SchemaError(RuntimeError):
    """The database is not migrated to the schema this vlmwatch needs."""


def resolve_url(url: str | URL, password_env: str | None = DEFAULT_PASSWORD_ENV) -> URL:
    """Parse ``url``; inject the password from ``$password_env`` when set and the URL has none.

    ``postgresql://`` and ``postgres://`` get the psycopg 3 driver.
    """
    u = make_url(url) if isinstance(url, str) else url
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    secret = os.environ.get(password_env) if password_env else None
    if secret and u.password is None and not u.drivername.startswith("sqlite"):
        u = u.set(password=secret)
    return u


def safe_url(url: str | URL) -> str:
    """The URL with any password masked, for messages and logs."""
    u = make_url(url) if isinstance(url, str) else url
    return u.render_as_string(hide_password=True)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "memory":  # in-memory databases cannot use WAL
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable in WAL mode up to the last checkpoint
    finally:
        cur.close()


def make_engine(url: str | URL, password_env: str | None = DEFAULT_PASSWORD_ENV, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` (SQLite: WAL, foreign keys, busy timeout; Postgres: psycopg).

    Bound parameters never appear in its error messages or logs (``hide_parameters=True``).
    """
    u = resolve_url(url, password_env)
    kwargs.setdefault("hide_parameters", True)
    if u.drivername.startswith("sqlite"):
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_engine(u, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(u, **kwargs)


class StorageSettings(Protocol):
    """What :func:`engine_for` reads: ``monitor.config``'s ``storage`` section fits."""

    @property
    def url(self) -> str: ...

    @property
    def password_env(self) -> str | None: ...


def engine_for(storage: StorageSettings, **kwargs: Any) -> Engine:
    """The engine for a storage config: ``storage.url`` with the password from ``$storage.password_env``.

    Everything in ``monitor/`` opens its engines here, so the configured variable is never
    bypassed; collectors, which take no config objects, pass the two values to :func:`make_engine`.
    """
    return make_engine(storage.url, storage.password_env, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str | URL | None = None) -> Any:
    """An Alembic ``Config`` pointing at the packaged migration scripts (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # '%' must be doubled for the ini interpolation Alembic applies to options.
        cfg.set_main_option("sqlalchemy.url", safe_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision of the packaged migrations."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise SchemaError("no migrations packaged with vlmwatch")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        revs = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(revs) > 1:
        raise SchemaError(f"database at {safe_url(engine.url)} has several schema heads: {', '.join(revs)}")
    return revs[0] if revs else None


def upgrade(url: str | URL, password_env: str | None = DEFAULT_PASSWORD_ENV, revision: str = "head") -> str:
    """Migrate the database at ``url`` to ``revision`` (default: head). Returns the new revision."""
    from alembic import command

    engine = make_engine(url, password_env)
    try:
        before = current_revision(engine)
        cfg = alembic_config(engine.url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        after = current_revision(engine)
    finally:
        engine.dispose()
    log.info("database %s migrated from %s to %s", safe_url(engine.url), before or "empty", after)
    return after or ""


def require_schema(engine: Engine) -> None:
    """Raise :class:`SchemaError` unless the database is at the packaged head revision."""
    where = safe_url(engine.url)
    try:
        rev = current_revision(engine)
    except Exception as e:  # unreachable server, unreadable file, ...
        raise SchemaError(f"cannot open database at {where}: {e}") from e
    head = head_revision()
    if rev is None:
        raise SchemaError(f"database at {where} is not migrated: run `vlmwatch db upgrade`")
    if rev != head:
        from alembic.script import ScriptDirectory

        known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
        if rev not in known:
            raise SchemaError(
                f"database at {where} is at revision {rev}, unknown to this vlmwatch (newer release?); "
                "upgrade vlmwatch"
            )
        raise SchemaError(
            f"database at {where} is at revision {rev}, this vlmwatch needs {head}: run `vlmwatch db upgrade`"
        )
