"""Dialect helpers shared by the repository modules."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy import ColumnElement, Table, any_, bindparam
from sqlalchemy.sql.dml import Insert

__all__ = ["insert_ignore", "chunks", "in_values"]

T = TypeVar("T")


def insert_ignore(table: Table, dialect_name: str) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for SQLite and PostgreSQL (any unique constraint)."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    if dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"vlmwatch storage supports sqlite and postgresql, not {dialect_name}")


def chunks(items: Sequence[T], size: int = 900) -> Iterator[Sequence[T]]:
    """Slices of at most ``size`` items (keeps ``IN (...)`` lists under SQLite's parameter limit)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def in_values(column: ColumnElement, values: Sequence[object], dialect_name: str) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``, one parameter instead of
    thousands (psycopg parses every placeholder of a statement in Python)."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)
