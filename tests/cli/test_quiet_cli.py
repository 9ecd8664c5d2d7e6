"""CLI commands print what they did, not Alembic's INFO lines."""

from __future__ import annotations


def test_db_and_status_commands_print_no_alembic_lines(vlmwatch_cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    for args in (("db", "upgrade"), ("db", "current"), ("status",), ("reference", "show"), ("probe", "list")):
        res = vlmwatch_cli(*args, db_url=url)
        assert res.returncode == 0, (args, res.stderr)
        assert "alembic" not in res.stderr.lower(), (args, res.stderr)
    assert "alembic" in vlmwatch_cli("--log-level", "DEBUG", "db", "current", db_url=url).stderr  # still there when asked
