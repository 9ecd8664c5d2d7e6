"""``vlmwatch reference set|show``: pin the reference a probe version is compared against."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

__all__ = ["register", "parse_window"]


def _ts(text: str, what: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--window {what} {text!r} is not an ISO 8601 time (e.g. 2025-01-31T12:00Z)") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def parse_window(text: str) -> tuple[datetime, datetime]:
    """'START..END' (ISO 8601, UTC when no offset) -> (start, end)."""
    if ".." not in text:
        raise argparse.ArgumentTypeError(f"--window must be START..END, got {text!r}")
    a, b = text.split("..", 1)
    start, end = _ts(a, "start"), _ts(b, "end")
    if end <= start:
        raise argparse.ArgumentTypeError(f"--window end {b!r} is not after start {a!r}")
    return start, end


def _set(args: argparse.Namespace) -> int:
    from monitor.calibration.reference import ReferenceError, set_reference
    from monitor.commands._storage import open_database
    from storage.db import session_factory

    settings, engine = open_database(args)
    try:
        with session_factory(engine)() as s:
            try:
                ref = set_reference(s, settings, args.model, *args.window, probe_version=args.probe_version)
            except ReferenceError as e:
                print(f"vlmwatch: {e}", file=sys.stderr)
                return 2
            s.commit()
            out = {"reference_id": ref.id, "model": ref.model, "probe_version_id": ref.probe_version_id,
                   "window_start": ref.window_start.isoformat(), "window_end": ref.window_end.isoformat(),
                   **{src: {k: v.get(k) for k in ("n", "disagreement")}
                      for src, v in ref.stats.items() if isinstance(v, dict)}}
    finally:
        engine.dispose()
    print(json.dumps(out, indent=2))
    print("detectors re-tune on the new reference (run `vlmwatch detect tune` to do it now)", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from monitor.commands._storage import open_database
    from storage.db import session_factory
    from storage.models import Reference

    _, engine = open_database(args)
    try:
        with session_factory(engine)() as s:
            q = select(Reference).where(Reference.active.is_(True))
            if args.model:
                q = q.where(Reference.model == args.model)
            rows = [{"id": r.id, "model": r.model, "probe_version_id": r.probe_version_id, "pinned": r.pinned,
                     "window_start": r.window_start.isoformat(), "window_end": r.window_end.isoformat(),
                     **{src: {k: v.get(k) for k in ("n", "complete", "disagreement")}
                        for src, v in r.stats.items() if isinstance(v, dict)}}
                    for r in s.scalars(q.order_by(Reference.id))]
    finally:
        engine.dispose()
    print(json.dumps(rows, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("reference", help="pin or show the reference statistics drift is measured against")
    sub = p.add_subparsers(dest="reference_command", metavar="ACTION", required=True)
    s = sub.add_parser("set", help="pin the evidence in a time window as the reference of a model's probe")
    s.add_argument("--model", required=True, help="served model name")
    s.add_argument("--window", required=True, type=parse_window, metavar="START..END",
                   help="ISO 8601 times, e.g. 2025-01-01T00:00Z..2025-01-02T00:00Z (UTC when no offset)")
    s.add_argument("--probe-version", default=None, help="probe version (default: the active one)")
    s.set_defaults(func=_set)
    sh = sub.add_parser("show", help="print the active references")
    sh.add_argument("--model", default=None)
    sh.set_defaults(func=_show)
