"""A database that refuses some records, as a DBA's constraint or a trigger would (both backends).

``refusing(engine, prompt)`` installs a trigger that rejects every sample whose prompt is ``prompt``
with an integrity error, and removes it afterwards: the way to exercise the paths that isolate a
record storage refuses for a reason other than the ones vlmwatch validates itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import Engine

__all__ = ["refusing"]


@contextmanager
def refusing(engine: Engine, prompt: str = "poison") -> Iterator[None]:
    quoted = prompt.replace("'", "''")
    with engine.begin() as c:
        if engine.dialect.name == "postgresql":
            c.execute(text(
                "CREATE FUNCTION vwt_refuse() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.prompt = '{quoted}' THEN RAISE EXCEPTION 'sample refused by a test trigger' "
                "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"))
            c.execute(text("CREATE TRIGGER vwt_refuse BEFORE INSERT ON samples FOR EACH ROW EXECUTE FUNCTION vwt_refuse()"))
        else:
            c.execute(text(f"CREATE TRIGGER vwt_refuse BEFORE INSERT ON samples WHEN NEW.prompt = '{quoted}' "
                           "BEGIN SELECT RAISE(ABORT, 'sample refused by a test trigger'); END"))
    try:
        yield
    finally:
        with engine.begin() as c:
            c.execute(text("DROP TRIGGER vwt_refuse ON samples" if engine.dialect.name == "postgresql"
                           else "DROP TRIGGER vwt_refuse"))
            if engine.dialect.name == "postgresql":
                c.execute(text("DROP FUNCTION vwt_refuse()"))
