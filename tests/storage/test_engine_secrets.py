"""Every engine the product opens takes its password from ``storage.password_env`` and never
logs bound parameters (prompt contents) in its error messages."""

from __future__ import annotations

import argparse
import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from storage.db import make_engine, session_factory
from storage.models import Sample, utcnow

ROOT = Path(__file__).resolve().parents[2]
SECRET_PROMPT = "the patient's name is Jane Roe, DOB 1970-01-01"


def test_errors_do_not_carry_bound_parameters(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from monitor.config import Settings
    from storage.db import engine_for

    engine = engine_for(Settings(storage={"url": db_url}).storage)
    try:
        sessions = session_factory(engine)
        row = dict(id="dup", model="m", prompt=SECRET_PROMPT, answer="yes", ts=utcnow())
        with sessions.begin() as s:
            s.add(Sample(**row))
        with pytest.raises(IntegrityError) as err:
            with sessions.begin() as s:
                s.add(Sample(**row))
        message = str(err.value)
        assert "INSERT INTO samples" in message  # the statement is still there to debug with
        assert SECRET_PROMPT not in message and "Jane Roe" not in message
        assert "parameters hidden" in message.lower()
        assert "Jane Roe" not in caplog.text
    finally:
        engine.dispose()


def test_make_engine_hides_parameters_by_default(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(Exception) as err:
            with eng.connect() as c:
                c.execute(text("SELECT * FROM no_such_table WHERE x = :v"), {"v": SECRET_PROMPT})
        assert "no_such_table" in str(err.value) and "Jane Roe" not in str(err.value)
    finally:
        eng.dispose()


@pytest.fixture
def password_role(pg_server: str):
    """A PostgreSQL role with a password and a database it owns; (url without the password, password)."""
    import psycopg

    from storage.db import upgrade

    admin = make_url(pg_server)
    role, password, dbname = f"vwt_pw_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}", f"vwt_pw_{uuid.uuid4().hex[:8]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{dbname}" OWNER "{role}"')
        # does the server check passwords for this role over TCP (Debian's default scram rule), or trust it?
        rules = conn.execute("SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND "
                             "(user_name = '{all}' OR user_name = %s) ORDER BY line_number", ("{" + role + "}",)).fetchall()
    upgrade(admin.set(username=role, password=password, database=dbname), password_env=None)
    url = admin.set(username=role, password=None, database=dbname).render_as_string(hide_password=False)
    yield url, password, bool(rules) and rules[0][0] != "trust"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _connects_as(engine, role: str) -> None:
    with engine.connect() as c:
        assert c.execute(text("SELECT current_user")).scalar() == role


def test_daemon_api_and_shippers_use_the_named_password_env(password_role, monkeypatch, tmp_path) -> None:
    from collectors.sample import CollectedSample
    from collectors.shipper import Shipper
    from collectors.spool import SpoolWriter
    from monitor.api import create_app
    from monitor.commands._collector import collector_options
    from monitor.config import Settings
    from monitor.daemon import Daemon

    url, password, checked = password_role
    role = make_url(url).username
    monkeypatch.delenv("VLMWATCH_DB_PASSWORD", raising=False)
    monkeypatch.setenv("VWT_OTHER_PW", password)  # not the default variable name
    settings = Settings(storage={"url": url, "password_env": "VWT_OTHER_PW"}, spool={"dir": str(tmp_path / "spool"),
                        "collector_ships": False}, daemon={"start_api": False})
    daemon = Daemon(settings)
    try:
        assert daemon.engine.url.password == password
        _connects_as(daemon.engine, role)
    finally:
        daemon.engine.dispose()
    app = create_app(settings)
    assert app.state.engine.url.password == password
    app.state.engine.dispose()
    # the collectors' shipper process gets the variable's name (never the secret) through its options
    cfg = tmp_path / "vlmwatch.yaml"
    cfg.write_text(f"storage:\n  url: {url}\n  password_env: VWT_OTHER_PW\nspool:\n  dir: {tmp_path / 'spool'}\n")
    _, opts = collector_options(argparse.Namespace(config=str(cfg), spool=None, sample_rate=None, no_ship=False,
                                                   log_level=None))
    assert opts.storage_password_env == "VWT_OTHER_PW" and password not in repr(opts)
    writer = SpoolWriter(opts.spool_dir, "proxy-1", max_bytes=10_000_000)
    writer.append([CollectedSample(id="pw-1", source="proxy", ts=utcnow(), model="m", route="/v1/chat/completions",
                                   prompt="p", answer="yes", response_id=None, image=None, meta={}).to_bytes()])
    writer.close()
    shipper = Shipper(opts.spool_dir, opts.storage_url, password_env=opts.storage_password_env)
    try:
        assert shipper.ship_once() == 1 and shipper.shipped == 1  # stored as the role, with its password
        assert shipper._engine.url.password == password
        _connects_as(shipper._engine, role)
    finally:
        shipper.stop()
    if checked:  # the server checks passwords: without the variable the same URL is refused
        monkeypatch.delenv("VWT_OTHER_PW")
        bare = make_engine(url, "VWT_OTHER_PW")
        with pytest.raises(Exception, match="password"):
            bare.connect().close()
        bare.dispose()


def test_product_code_opens_engines_only_through_the_password_aware_helpers() -> None:
    """No engine in monitor/, collectors/ or alerts/ is made from a bare URL."""
    bare = []
    for pkg in ("monitor", "collectors", "alerts"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\bcreate_engine\(", line) or re.search(r"\bmake_engine\(([^,()]+)\)", line):
                    bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert bare == []
