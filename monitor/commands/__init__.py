"""Sub-commands of ``vlmwatch``; each module exposes ``register(subparsers)``.

Keep module-level imports light (standard library, ``monitor.config``): heavy libraries are
imported inside the command functions.

A command refuses by raising :class:`CommandError`; ``monitor.cli.main`` prints its line on
stderr and exits with its code (2 unless told otherwise).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monitor.config import Settings, load_config

__all__ = ["CommandError", "existing_file", "settings_from"]


class CommandError(Exception):
    """A command that cannot go on: ``vlmwatch[ COMMAND]: MESSAGE`` on stderr, exit status ``code``."""

    def __init__(self, message: str, *, code: int = 2, command: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.line = f"vlmwatch {command}: {message}" if command else f"vlmwatch: {message}"


def settings_from(args: argparse.Namespace) -> Settings:
    """Load the config named by ``--config`` (raises ConfigError with a clear message)."""
    return load_config(getattr(args, "config", None))


def existing_file(name: str, what: str) -> Path:
    """The path ``name``, refused (``vlmwatch: WHAT not found: NAME``) when it is not a file."""
    path = Path(name)
    if not path.is_file():
        raise CommandError(f"{what} not found: {path}")
    return path
