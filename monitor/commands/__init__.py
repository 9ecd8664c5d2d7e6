"""Sub-commands of ``vlmwatch``; each module exposes ``register(subparsers)``.

Keep module-level imports light (standard library, ``monitor.config``): heavy libraries are
imported inside the command functions.

A command refuses by raising :class:`CommandError`; ``monitor.cli.main`` prints its line on
stderr and exits with its code (2 unless told otherwise).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.config import Settings, load_config

__all__ = ["CommandError", "add_actions", "add_command", "existing_file", "settings_from"]


class CommandError(Exception):
    """A command that cannot go on: ``vlmwatch[ COMMAND]: MESSAGE`` on stderr, exit status ``code``."""

    def __init__(self, message: str, *, code: int = 2, command: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.line = f"vlmwatch {command}: {message}" if command else f"vlmwatch: {message}"


def add_command(subparsers: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int], *,
                help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """Declare the (sub-)command ``name``, run as ``func(args)``; ``kwargs`` go to ``add_parser``
    (``description``, ...). Its parser, for the command's own arguments."""
    parser = subparsers.add_parser(name, help=help, **kwargs)
    parser.set_defaults(func=func)
    return parser


def add_actions(subparsers: argparse._SubParsersAction, name: str, *, help: str) -> argparse._SubParsersAction:
    """Declare ``vlmwatch NAME ACTION``, a command made of actions: the sub-parsers to add them to."""
    parser = subparsers.add_parser(name, help=help)
    return parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)


def settings_from(args: argparse.Namespace) -> Settings:
    """Load the config named by ``--config`` (raises ConfigError with a clear message)."""
    return load_config(getattr(args, "config", None))


def existing_file(name: str, what: str) -> Path:
    """The path ``name``, refused (``vlmwatch: WHAT not found: NAME``) when it is not a file."""
    path = Path(name)
    if not path.is_file():
        raise CommandError(f"{what} not found: {path}")
    return path
