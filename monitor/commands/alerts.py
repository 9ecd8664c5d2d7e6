"""``vlmwatch alerts test``: send a test notification through the configured alert channels."""

from __future__ import annotations

import argparse
import json

from monitor.commands import add_actions, add_command

__all__ = ["register"]


def _test(args: argparse.Namespace) -> int:
    from alerts.smoke import TEST_RULE, send_test_alert
    from monitor.commands import CommandError, settings_from

    settings = settings_from(args)
    channels = settings.alerts.channels
    if args.channel and args.channel not in {c.name for c in channels}:
        raise CommandError(f"no channel named {args.channel!r} in alerts.channels "
                           f"(configured: {', '.join(c.name for c in channels) or 'none'})", command="alerts test")
    if not channels:
        raise CommandError("no alert channels configured (alerts.channels is empty); see config.example.yaml",
                           command="alerts test")
    results = send_test_alert(settings.alerts, model=args.model, channel=args.channel)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        for r in results:
            how = f"HTTP {r.status}" if r.status is not None else "no answer"
            print(f"{r.channel} ({r.kind}, {r.url}): {'ok' if r.ok else 'FAILED'}, {how}"
                  + (f": {r.error}" if r.error else ""))
        print(f"sent one {TEST_RULE} notification (severity info, event test) to {len(results)} channel(s)")
    return 0 if all(r.ok for r in results) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_actions(subparsers, "alerts", help="alert channels: send a test notification")
    t = add_command(
        sub, "test", _test, help="send one test notification through every configured channel, now",
        description="Render a test alert (rule vlmwatch_test, severity info, event test) for each channel in "
        "alerts.channels and post it once, with the headers and signature of a real delivery, without the "
        "outbox (nothing is stored). Exit status 0 when every channel answered 2xx, 1 otherwise, 2 when "
        "there is no channel to test.")
    t.add_argument("--channel", default=None, metavar="NAME", help="only this channel")
    t.add_argument("--model", default="vlmwatch-test", help="model name written in the test alert")
    t.add_argument("--json", action="store_true", help="print the results as JSON")
