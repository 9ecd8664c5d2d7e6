"""``vlmwatch daemon``: the scheduler, the scoring workers and (by default) the HTTP API beside them."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from monitor.commands import CommandError, add_command

if TYPE_CHECKING:
    from monitor.api.server import ServerThread
    from monitor.config import Settings
    from monitor.daemon import Daemon

__all__ = ["register", "api_beside"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "daemon", run,
        help="run the monitoring daemon (scoring, spot checks, calibration, detection, alerts, reports, API)",
        description="Run the monitoring daemon until SIGTERM/SIGINT. With PostgreSQL several daemons may run "
        "side by side (they share the scoring work; one is the scheduler leader); with SQLite only one.",
    )
    p.add_argument("--no-api", action="store_true", help="do not serve the HTTP API in this process")
    p.add_argument("--worker-id", default=None, help="worker id used for leases (default host:pid:random)")


def api_beside(settings: Settings, daemon: Daemon) -> Callable[[], ServerThread]:
    """The HTTP API on ``api.listen`` over the daemon's engine, its status on /healthz: for
    ``daemon.run(beside=...)``, which builds it before taking any lock (open writes on a public
    address refuse there, :class:`~monitor.config.ConfigError`) and stops it after the leases."""

    def build() -> ServerThread:
        from monitor.api.server import ServerThread, make_server

        return ServerThread(make_server(settings, engine=daemon.engine, daemon_status=daemon.status))

    return build


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.daemon import Daemon, DaemonAlreadyRunning
    from storage.db import SchemaError

    settings = load_config(args.config)
    if args.log_level is None:
        logging.getLogger().setLevel(settings.log_level.upper())
    try:
        daemon = Daemon(settings, worker_id=args.worker_id)
        serve_api = settings.daemon.start_api and not args.no_api
        rc = daemon.run(beside=api_beside(settings, daemon) if serve_api else None)
    except DaemonAlreadyRunning as e:
        raise CommandError(str(e), code=3, command="daemon") from None
    except SchemaError as e:
        raise CommandError(str(e), command="daemon") from None
    if rc != 0:
        # a job did not finish within daemon.shutdown_timeout_seconds: its thread would keep the
        # process alive; everything it did is idempotent and its leases expire, so leave now.
        logging.shutdown()
        os._exit(rc)
    return rc
