"""Shared start-up for the collector commands (``proxy``, ``tail``): config to CollectorOptions."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collectors.service import CollectorOptions
    from monitor.config import Settings

__all__ = ["add_collector_args", "collector_options"]


def add_collector_args(parser: argparse.ArgumentParser, *, sample_rate_help: str) -> None:
    """The flags :func:`collector_options` reads besides ``--log-level``: ``--spool``, ``--sample-rate``, ``--no-ship``."""
    parser.add_argument("--spool", metavar="DIR", help="spool directory (spool.dir)")
    parser.add_argument("--sample-rate", type=float, default=None, help=sample_rate_help)
    parser.add_argument("--no-ship", action="store_true", help="do not ship the spool to storage from here")


def collector_options(args: argparse.Namespace, *, proxy_queue: bool = False) -> tuple[Settings, CollectorOptions]:
    """The config named by ``--config`` and the CollectorOptions it gives with the shared flags.

    ``--spool``, ``--sample-rate``, ``--no-ship`` and ``--log-level`` override the config;
    ``proxy_queue`` also takes ``proxy.queue_size`` (the proxy's hand-off queue).
    """
    from collectors.service import CollectorOptions
    from monitor.commands import settings_from

    s = settings_from(args)
    ships = s.spool.collector_ships and not args.no_ship
    opts = CollectorOptions(
        spool_dir=args.spool or s.spool.dir,
        spool_max_bytes=s.spool.max_bytes,
        storage_url=s.storage.url if ships else None,
        storage_password_env=s.storage.password_env,
        ship_interval=s.spool.ship_interval_seconds,
        sample_rate=s.proxy.sample_rate if args.sample_rate is None else args.sample_rate,
        rates=dict(s.proxy.rates),
        max_image_bytes=s.storage.max_image_bytes,
        redact_hook=s.spool.redact_hook,
        tasks=s.task_rules().to_plain(),
        background_nice=s.spool.background_nice,
        log_level=(args.log_level or s.log_level).upper(),
    )
    if proxy_queue:
        opts = dataclasses.replace(opts, queue_size=s.proxy.queue_size)
    return s, opts
