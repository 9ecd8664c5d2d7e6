"""Sub-commands of ``vlmwatch``; each module exposes ``register(subparsers)``.

Keep module-level imports light (standard library, ``monitor.config``): heavy libraries are
imported inside the command functions.
"""

from __future__ import annotations

import argparse

from monitor.config import Settings, load_config


def settings_from(args: argparse.Namespace) -> Settings:
    """Load the config named by ``--config`` (raises ConfigError with a clear message)."""
    return load_config(getattr(args, "config", None))
