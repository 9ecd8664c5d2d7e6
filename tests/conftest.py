"""Shared test fixtures.

Fail-open code (collectors, delivery) swallows its own errors in production; in tests those
errors are re-raised at teardown (the ``internal_errors`` fixture) so bugs cannot hide behind
"fail open". Code reports such errors through ``storage.failopen.report_internal_error``.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PG_URL = os.environ.get("VLMWATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _cuda() -> bool:
    try:
        import torch
    except Exception:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("gpu" in item.keywords for item in items) and not _cuda():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def internal_errors():
    """Re-raise errors that fail-open code swallowed during the test."""
    from storage import failopen

    failopen.captured.clear()
    failopen.capture = True
    yield failopen.captured
    failopen.capture = False
    errors = list(failopen.captured)
    failopen.captured.clear()
    if errors:
        raise AssertionError(f"fail-open code swallowed {len(errors)} internal error(s): {errors[0]!r}") from errors[0]


# --- storage: a fresh database on each backend -------------------------------------------------
# SQLite in a temp file, and PostgreSQL on the real server at VLMWATCH_TEST_PG_URL (one fresh
# database per test module, dropped afterwards). Without a server the postgres cases skip, saying
# how to enable them; with VLMWATCH_REQUIRE_PG=1 (CI) they fail instead.

_pg_state: dict[str, str | None] = {}


def _pg_unavailable() -> str | None:
    """None when the PostgreSQL test server answers, else why not (cached per session)."""
    if "error" not in _pg_state:
        import psycopg
        from sqlalchemy.engine import make_url

        dsn = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            psycopg.connect(dsn, connect_timeout=3).close()
            _pg_state["error"] = None
        except Exception as e:
            _pg_state["error"] = f"{type(e).__name__}: {e}".strip()
    return _pg_state["error"]


def _skip_or_fail(msg: str, require_env: str) -> None:
    """Skip a test whose service is missing, or fail it when ``$require_env`` is 1 (``.ci/run`` sets it)."""
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{msg}; {require_env}=1 makes this a failure", pytrace=False)
    pytest.skip(f"{msg}; set {require_env}=1 to fail instead of skipping")


def _skip_or_fail_pg() -> None:
    err = _pg_unavailable()
    if err is None:
        return
    _skip_or_fail(
        f"PostgreSQL not reachable at {PG_URL} ({err}). Start a server with trust auth and a `test` "
        "database (.ci/run does), or point VLMWATCH_TEST_PG_URL at one",
        "VLMWATCH_REQUIRE_PG",
    )


@pytest.fixture
def pg_server() -> str:
    """The PostgreSQL test server's admin URL; skips (or fails, VLMWATCH_REQUIRE_PG=1) without one."""
    _skip_or_fail_pg()
    return PG_URL


def _binary(names: tuple[str, ...], hint: str, require_env: str) -> str:
    """Path of the first of ``names`` on PATH; skips (or fails, ``$require_env`` = 1) without one."""
    import shutil

    for name in names:
        path = shutil.which(name)
        if path:
            return path
    _skip_or_fail(f"{names[0]} not installed ({hint}; .ci/run installs it)", require_env)
    raise AssertionError("unreachable")  # _skip_or_fail raises


@pytest.fixture
def alertmanager_binary() -> str:
    """Path of Prometheus Alertmanager; skips (or fails, VLMWATCH_REQUIRE_ALERTMANAGER=1) without it."""
    return _binary(("prometheus-alertmanager", "alertmanager"), "apt-get install -y prometheus-alertmanager",
                   "VLMWATCH_REQUIRE_ALERTMANAGER")


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (Debian's ``prometheus`` package); skips (or fails, VLMWATCH_REQUIRE_PROMETHEUS=1) without it."""
    return _binary(("promtool",), "apt-get install -y prometheus", "VLMWATCH_REQUIRE_PROMETHEUS")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Path of the Prometheus server; skips (or fails, VLMWATCH_REQUIRE_PROMETHEUS=1) without it."""
    return _binary(("prometheus",), "apt-get install -y prometheus", "VLMWATCH_REQUIRE_PROMETHEUS")


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    """Path of Debian's chromium for the browser tests (``$VLMWATCH_CHROMIUM`` overrides); skips, or
    fails with VLMWATCH_REQUIRE_BROWSER=1, without it or without the ``playwright`` package."""
    import importlib.util
    import shutil

    binary = os.environ.get("VLMWATCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(binary, os.X_OK):
        _skip_or_fail(f"chromium not found at {binary} (apt-get install -y chromium; .ci/run installs it)",
                      "VLMWATCH_REQUIRE_BROWSER")
    if importlib.util.find_spec("playwright") is None:
        _skip_or_fail("the playwright package is not installed (pip install -e '.[test]')", "VLMWATCH_REQUIRE_BROWSER")
    return binary


def _drop_stale_test_databases(conn, max_age_s: float) -> None:
    """Drop test databases that killed runs left behind (older than ``max_age_s``)."""
    import re
    import time

    for (datname,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'vwt\\_%'").fetchall():
        m = re.match(r"^vwt_.*_([0-9a-f]{8})_[0-9a-f]{6}$", datname)
        if m and time.time() - int(m.group(1), 16) > max_age_s:
            conn.execute(f'DROP DATABASE IF EXISTS "{datname}" WITH (FORCE)')


class _FreshDatabase:
    """Create and drop empty databases of one kind (sqlite file or postgres database)."""

    def __init__(self, kind: str, tmp_dir) -> None:
        self.kind, self.tmp_dir = kind, tmp_dir
        self.created: list[str] = []

    def create(self, tag: str) -> str:
        import re
        import uuid

        import time

        # vwt_<tag>_<creation time, hex seconds>_<random>: the time lets later runs drop leftovers
        name = f"vwt_{re.sub(r'[^a-z0-9]+', '_', tag.lower())[-30:]}_{int(time.time()):x}_{uuid.uuid4().hex[:6]}"
        if self.kind == "sqlite":
            return f"sqlite:///{self.tmp_dir / (name + '.db')}"
        _skip_or_fail_pg()
        import psycopg
        from sqlalchemy.engine import make_url

        admin = make_url(PG_URL)
        with psycopg.connect(admin.set(drivername="postgresql").render_as_string(hide_password=False),
                             autocommit=True) as conn:
            if not _pg_state.get("swept"):
                _pg_state["swept"] = "yes"
                _drop_stale_test_databases(conn, max_age_s=6 * 3600)
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return admin.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if not self.created:
            return
        import psycopg
        from sqlalchemy.engine import make_url

        dsn = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


_DB_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=_DB_KINDS)
def _migrated_database(request, tmp_path_factory):
    from storage.db import upgrade

    fresh = _FreshDatabase(request.param, tmp_path_factory.mktemp("db"))
    try:
        url = fresh.create(request.module.__name__)
        upgrade(url)
        yield url
    finally:
        fresh.drop_all()


@pytest.fixture
def db_url(_migrated_database):
    """URL of a migrated, empty database (sqlite and postgres); tables are emptied before each test."""
    from storage.db import make_engine
    from storage.models import Base

    engine = make_engine(_migrated_database)
    try:
        with engine.begin() as conn:
            tables = list(reversed(Base.metadata.sorted_tables))
            if engine.dialect.name == "postgresql":
                names = ", ".join(f'"{t.name}"' for t in tables)
                # a connection left open by an earlier test would block TRUNCATE: fail clearly instead
                conn.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
                conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
            else:
                for t in tables:
                    conn.execute(t.delete())
    finally:
        engine.dispose()
    return _migrated_database


@pytest.fixture
def engine(db_url):
    """An engine on ``db_url`` (disposed after the test)."""
    from storage.db import make_engine

    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(params=_DB_KINDS)
def empty_db_url(request, tmp_path):
    """URL of a fresh database that was never migrated (sqlite and postgres)."""
    fresh = _FreshDatabase(request.param, tmp_path)
    try:
        yield fresh.create(request.node.name)
    finally:
        fresh.drop_all()


@pytest.fixture
def vlmwatch_cli(tmp_path):
    """Run the installed ``vlmwatch`` console script in a subprocess: ``vlmwatch_cli(*args, db_url=...)``."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "vlmwatch"

    def run(*args: str, db_url: str | None = None, cwd=None, env: dict | None = None, timeout: float = 300):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VLMWATCH_")}
        if db_url is not None:
            full_env["VLMWATCH_STORAGE__URL"] = db_url
        full_env.update(env or {})
        return subprocess.run(
            [str(exe), *args], cwd=cwd or tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout
        )

    return run
