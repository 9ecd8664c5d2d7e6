"""The read-only dashboard under ``/ui``, served by the HTTP API (``monitor.api.app``).

Server-rendered pages (FastAPI + Jinja2, charts as inline SVG); the CSS ships in the package
(``monitor/ui/static``), nothing is fetched from elsewhere. Pages and what each shows:
:mod:`monitor.ui.routes`; read protection of the pages that show samples: :mod:`monitor.ui.auth`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monitor.ui.auth import LOGIN_PATHS

if TYPE_CHECKING:
    from fastapi import FastAPI

    from monitor.config import Settings

__all__ = ["mount_ui", "LOGIN_PATHS"]


def mount_ui(app: FastAPI, settings: Settings) -> None:
    """Add the dashboard's routes to the API ``app`` (same database, same token as writes)."""
    from monitor.ui.routes import mount

    mount(app, settings, token=lambda: settings.secret(settings.api.token_env))
