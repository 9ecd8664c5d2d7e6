"""``vlmwatch api``: serve the HTTP API alone (the daemon serves it too, by default)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "api",
        help="serve the HTTP API (ingest, labels, calibration history, alerts, /metrics)",
        description="Serve the HTTP API on api.listen. Writes need a bearer token when the environment "
        "variable named by api.token_env is set; without it writes are open, which is refused on a "
        "non-loopback address unless api.allow_open_writes is true. Request bodies over api.max_body_bytes "
        "get 413. OpenAPI schema at /openapi.json, docs at /docs.",
    )
    p.add_argument("--listen", default=None, help="host:port (default: api.listen)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.api.server import make_server
    from monitor.config import load_config
    from storage.db import SchemaError, engine_for, require_schema

    settings = load_config(args.config)
    engine = engine_for(settings.storage)
    try:
        require_schema(engine)
    except SchemaError as e:
        print(f"vlmwatch api: {e}", file=sys.stderr)
        return 2
    try:
        server = make_server(settings, engine=engine, listen=args.listen)
    except ValueError as e:
        print(f"vlmwatch api: {e}", file=sys.stderr)
        return 2
    server.run()
    return 0
