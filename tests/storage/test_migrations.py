"""models.py and the Alembic migrations describe the same schema (an ``alembic check``)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from storage.db import alembic_config
from storage.models import Base


def test_migrated_schema_matches_models(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], (
        "storage/models.py and storage/migrations disagree; run "
        "`.venv/bin/python -m storage.migrations.regenerate`:\n" + "\n".join(map(repr, diff))
    )


def test_one_linear_history():
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
