"""``vlmwatch tail FILE``: follow a JSONL request log into the spool.

Survives rotation and truncation and resumes from its checkpoint (in the spool lane) after a
restart, with no line lost or repeated. Unusable lines are counted and logged with their offset.
"""

from __future__ import annotations

import argparse

from monitor.commands import add_command
from monitor.commands._collector import add_collector_args

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from collectors.service import run_tail
    from monitor.commands import CommandError
    from monitor.commands._collector import collector_options

    _, opts = collector_options(args)
    try:
        return run_tail(opts, args.file, from_end=args.from_end, poll_interval=args.poll_interval)
    except (ValueError, OSError) as e:
        raise CommandError(str(e), command="tail") from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(sub, "tail", _run, help="follow a JSONL request log into the spool", description=__doc__)
    p.add_argument("file", metavar="FILE", help="JSONL log (samples-file lines or {request, response} lines)")
    add_collector_args(p, sample_rate_help="sampling rate (default proxy.sample_rate; 1.0 keeps every line)")
    p.add_argument("--from-end", action="store_true", help="without a checkpoint, start at the end of the file")
    p.add_argument("--poll-interval", type=float, default=0.5, help="seconds between polls at end of file")
