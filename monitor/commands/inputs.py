"""``vlmwatch inputs pin|show``: the reference input drift is measured against, and where it stands."""

from __future__ import annotations

import argparse
import json
import sys

from monitor.commands import add_actions, add_command
from monitor.commands.reference import parse_window

__all__ = ["register"]


def _pin(args: argparse.Namespace) -> int:
    from monitor.commands import CommandError
    from monitor.commands._storage import open_database
    from monitor.inputs import pin_reference

    with open_database(args) as database, database.sessions() as s:
        try:
            ref = pin_reference(s, database.settings, args.model, *args.window)
        except ValueError as e:
            raise CommandError(str(e)) from None
        out = {"input_reference_id": ref.id, "model": ref.model, "n": ref.n,
               "window_start": ref.window_start.isoformat(), "window_end": ref.window_end.isoformat(),
               "p_threshold": ref.stats["p_threshold"], "effective_tests": ref.stats["effective_tests"],
               "embedding": ref.stats["embedding"] is not None}
    print(json.dumps(out, indent=2))
    print("an open input_drift alert of this model was resolved; windows after the new reference are tested next",
          file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    from monitor.commands._storage import open_database
    from monitor.inputs.summary import input_drift_summary

    with open_database(args) as database, database.sessions() as s:
        summary = input_drift_summary(s, args.model)
    for v in summary.values():
        v.pop("embedding_over_time", None)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_actions(subparsers, "inputs", help="input drift: pin its reference, show the newest window's tests")
    s = add_command(sub, "pin", _pin, help="make the scored samples of a time window the model's input reference "
                                   "(re-tunes the thresholds; resolves an open input_drift alert)")
    s.add_argument("--model", required=True, help="served model name")
    s.add_argument("--window", required=True, type=parse_window, metavar="START..END",
                   help="ISO 8601 times, e.g. 2025-01-01T00:00Z..2025-01-02T00:00Z (UTC when no offset)")
    sh = add_command(sub, "show", _show, help="print each model's input reference, newest window and firing alert")
    sh.add_argument("--model", default=None)
