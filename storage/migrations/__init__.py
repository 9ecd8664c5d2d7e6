"""Alembic migration scripts for the vlmwatch schema (run through :func:`storage.db.upgrade`)."""
