"""``vlmwatch api``: serve the HTTP API alone (the daemon serves it too, by default)."""

from __future__ import annotations

import argparse

from monitor.commands import add_command

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "api", run,
        help="serve the HTTP API (ingest, OTLP traces, labels, calibration history, alerts, /metrics)",
        description="Serve the HTTP API on api.listen. Writes need a bearer token when the environment "
        "variable named by api.token_env is set; without it writes are open, which is refused on a "
        "non-loopback address unless api.allow_open_writes is true. Request bodies over api.max_body_bytes "
        "get 413. OpenAPI schema at /openapi.json, docs at /docs.",
    )
    p.add_argument("--listen", default=None, help="host:port (default: api.listen)")


def run(args: argparse.Namespace) -> int:
    from monitor.api.server import make_server
    from monitor.commands import CommandError
    from monitor.commands._storage import open_database

    with open_database(args, command="api") as database:
        try:
            server = make_server(database.settings, engine=database.engine, listen=args.listen)
        except ValueError as e:
            raise CommandError(str(e), command="api") from None
        server.run()
    return 0
