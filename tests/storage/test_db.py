"""Engines, password injection, migrations and the schema check, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from storage import db
from storage.models import Base


def test_sqlite_engine_has_wal_foreign_keys_and_busy_timeout(tmp_path):
    eng = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_TIMEOUT_MS
    finally:
        eng.dispose()


def test_password_comes_from_the_named_env_var_and_is_masked(monkeypatch):
    monkeypatch.setenv("MY_DB_PW", "s3cret")
    u = db.resolve_url("postgresql://vlm@db.internal/prod", "MY_DB_PW")
    assert u.drivername == "postgresql+psycopg" and u.password == "s3cret"
    assert "s3cret" not in db.safe_url(u)
    # a password already in the URL wins; sqlite never gets one
    assert db.resolve_url("postgresql+psycopg://vlm:other@h/d", "MY_DB_PW").password == "other"
    assert db.resolve_url("sqlite:///x.db", "MY_DB_PW").password is None
    monkeypatch.delenv("MY_DB_PW")
    assert db.resolve_url("postgresql://vlm@h/d", "MY_DB_PW").password is None


def test_unmigrated_database_is_refused_until_upgraded(empty_db_url):
    eng = db.make_engine(empty_db_url)
    try:
        with pytest.raises(db.SchemaError, match=r"is not migrated: run `vlmwatch db upgrade`"):
            db.require_schema(eng)
        assert db.upgrade(empty_db_url) == db.head_revision()
        db.require_schema(eng)
        tables = set(inspect(eng).get_table_names())
        assert set(Base.metadata.tables) <= tables
        # upgrading again is a no-op
        assert db.upgrade(empty_db_url) == db.head_revision()
    finally:
        eng.dispose()


def test_unknown_revision_is_refused(engine):
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    with pytest.raises(db.SchemaError, match="unknown to this vlmwatch"):
        db.require_schema(engine)


def test_unreachable_database_is_a_schema_error(tmp_path):
    eng = db.make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    try:
        with pytest.raises(db.SchemaError, match="cannot open database"):
            db.require_schema(eng)
    finally:
        eng.dispose()


def test_migrations_are_packaged_with_the_code():
    assert (db.MIGRATIONS_DIR / "env.py").is_file()
    assert db.head_revision() == "0001_initial"


def test_initial_revision_downgrades_to_empty_and_upgrades_again(empty_db_url):
    from alembic import command

    db.upgrade(empty_db_url)
    eng = db.make_engine(empty_db_url)
    try:
        with eng.begin() as conn:
            cfg = db.alembic_config(eng.url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(eng).get_table_names()) <= {"alembic_version"}
        assert db.current_revision(eng) is None
        db.upgrade(empty_db_url)
        db.require_schema(eng)
    finally:
        eng.dispose()
