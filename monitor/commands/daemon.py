"""``vlmwatch daemon``: the scheduler, the scoring workers and (by default) the HTTP API."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from monitor.commands import add_command

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "daemon", run,
        help="run the monitoring daemon (scoring, spot checks, calibration, detection, alerts, reports, API)",
        description="Run the monitoring daemon until SIGTERM/SIGINT. With PostgreSQL several daemons may run "
        "side by side (they share the scoring work; one is the scheduler leader); with SQLite only one.",
    )
    p.add_argument("--no-api", action="store_true", help="do not serve the HTTP API in this process")
    p.add_argument("--worker-id", default=None, help="worker id used for leases (default host:pid:random)")


def run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.daemon import Daemon, DaemonAlreadyRunning
    from storage.db import SchemaError

    settings = load_config(args.config)
    if args.log_level is None:
        logging.getLogger().setLevel(settings.log_level.upper())
    try:
        daemon = Daemon(settings, worker_id=args.worker_id, start_api=False if args.no_api else None)
        rc = daemon.run()
    except DaemonAlreadyRunning as e:
        print(f"vlmwatch daemon: {e}", file=sys.stderr)
        return 3
    except SchemaError as e:
        print(f"vlmwatch daemon: {e}", file=sys.stderr)
        return 2
    if rc != 0:
        # a job did not finish within daemon.shutdown_timeout_seconds: its thread would keep the
        # process alive; everything it did is idempotent and its leases expire, so leave now.
        logging.shutdown()
        os._exit(rc)
    return rc
