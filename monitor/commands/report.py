"""``vlmwatch report``: the calibration drift report for a period."""

from __future__ import annotations

import argparse

from monitor.commands import add_command
from monitor.progress import add_quiet_flag, wanted

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "report", run,
        help="calibration drift report: Evidently HTML, reliability diagrams, timelines, JSON summary",
        description="Write the calibration drift report for the last --since span into --out: score_drift.html "
        "(Evidently, reference vs current score distributions), reliability.png (per window), timelines.png "
        "(AUROC / ECE / agreement with 95%% bands and alert markers) and summary.json.",
    )
    p.add_argument("--since", default="7d", help="time span back from now: 30m, 12h, 7d, 2w (default 7d)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--model", default=None, help="only this served model")
    add_quiet_flag(p)


def run(args: argparse.Namespace) -> int:
    from monitor.commands import CommandError
    from monitor.commands._storage import open_database
    from monitor.report import build_report, parse_since

    try:
        parse_since(args.since)
    except ValueError as e:
        raise CommandError(str(e), command="report") from None
    with open_database(args, command="report") as database:
        summary = build_report(database.sessions, database.settings, since=args.since, out_dir=args.out,
                               model=args.model, progress=wanted(args))
    print(f"report: {summary['scored']} scored samples, {summary['labelled']} labelled, "
          f"{len(summary['alerts'])} alerts -> {args.out}")
    return 0
