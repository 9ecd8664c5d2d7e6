"""Serving the API with uvicorn: beside the daemon's jobs (``vlmwatch daemon``), or on its own (``vlmwatch api``)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from monitor.api.app import DaemonStatus, create_app
from monitor.api.guard import check_exposure
from monitor.config import Settings

if TYPE_CHECKING:
    import uvicorn

__all__ = ["parse_listen", "make_server", "ServerThread"]

logger = logging.getLogger(__name__)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8090`` for IPv6) -> (host, port); a clear error otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"api.listen must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def make_server(settings: Settings, *, engine: Engine | None = None, daemon_status: DaemonStatus | None = None,
                listen: str | None = None) -> uvicorn.Server:
    """A ``uvicorn.Server`` for the app; ``server.run()`` serves, ``server.should_exit = True`` stops.

    ``daemon_status``: the daemon's ``status`` method, shown on /healthz.
    Raises :class:`~monitor.config.ConfigError` for open writes on a non-loopback address
    (:func:`monitor.api.guard.check_exposure`); logs a warning whenever writes are open.
    """
    import uvicorn

    host, port = parse_listen(listen or settings.api.listen)
    open_writes = check_exposure(settings, host)  # refuses open writes on a public address
    app = create_app(settings, engine=engine, daemon_status=daemon_status)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    logger.info("HTTP API on http://%s:%d (docs at /docs, schema at /openapi.json)", host, port)
    if open_writes:
        logger.warning("HTTP API writes are OPEN: $%s is not set, so anyone who reaches %s:%d can post samples "
                       "and labels; set it to require a bearer token", settings.api.token_env, host, port)
    else:
        logger.info("HTTP API writes need the bearer token from $%s", settings.api.token_env)
    return server


class ServerThread:
    """``server`` run in a daemon thread of its own: how ``vlmwatch daemon`` serves the API beside its jobs."""

    def __init__(self, server: uvicorn.Server, name: str = "vlmwatch-api") -> None:
        self.server = server
        self._thread = threading.Thread(target=server.run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Ask the server to exit; wait at most ``timeout`` seconds for it (when it was started)."""
        self.server.should_exit = True
        if self._thread.ident is not None:
            self._thread.join(timeout=timeout)
