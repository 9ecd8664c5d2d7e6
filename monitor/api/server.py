"""Serving the API with uvicorn: in a thread of the daemon, or on its own (``vlmwatch api``)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Engine

from monitor.api.guard import check_exposure
from monitor.config import Settings

__all__ = ["parse_listen", "make_server"]

logger = logging.getLogger(__name__)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8090`` for IPv6) -> (host, port); a clear error otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"api.listen must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def make_server(settings: Settings, *, engine: Engine | None = None, daemon: Any = None, listen: str | None = None) -> Any:
    """A ``uvicorn.Server`` for the app; ``server.run()`` serves, ``server.should_exit = True`` stops.

    Raises :class:`~monitor.config.ConfigError` for open writes on a non-loopback address
    (:func:`monitor.api.guard.check_exposure`); logs a warning whenever writes are open.
    """
    import uvicorn

    from monitor.api.app import create_app

    host, port = parse_listen(listen or settings.api.listen)
    open_writes = check_exposure(settings, host)  # refuses open writes on a public address
    app = create_app(settings, engine=engine, daemon=daemon)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    logger.info("HTTP API on http://%s:%d (docs at /docs, schema at /openapi.json)", host, port)
    if open_writes:
        logger.warning("HTTP API writes are OPEN: $%s is not set, so anyone who reaches %s:%d can post samples "
                       "and labels; set it to require a bearer token", settings.api.token_env, host, port)
    else:
        logger.info("HTTP API writes need the bearer token from $%s", settings.api.token_env)
    return server
