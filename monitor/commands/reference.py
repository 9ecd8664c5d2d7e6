"""``vlmwatch reference set|show``: pin the reference a probe version is compared against."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from monitor.commands import CommandError, add_actions, add_command, existing_file
from monitor.progress import add_quiet_flag

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


def _wait_scored(sessions: Any, ids: list[str], wait: float, show: bool) -> int:
    """Wait up to ``wait`` seconds for the daemon to score the samples ``ids``; how many are left."""
    from sqlalchemy import func, select

    from monitor.progress import progress
    from storage.models import Sample

    def pending() -> int:
        with sessions() as s:
            return sum(s.scalar(select(func.count()).select_from(Sample).where(
                Sample.id.in_(ids[i:i + 500]), Sample.status == "pending")) or 0 for i in range(0, len(ids), 500))

    deadline = time.monotonic() + wait
    left = pending()
    if left:
        print(f"waiting up to {wait:.0f} s for the daemon to score {left} reference samples", file=sys.stderr)
    with progress(len(ids), "reference samples scored", "sample", enabled=show and left > 0) as bar:
        bar.update(len(ids) - left)
        while left and time.monotonic() < deadline:
            time.sleep(1.0)
            now_left = pending()
            bar.update(left - now_left)
            left = now_left
    return left


def _window_of_samples(args: argparse.Namespace, database: Any) -> tuple[datetime, datetime]:
    """Ingest ``--samples``, wait for the daemon to score them; the span of their ``ts``."""
    from monitor.commands.ingest import ingest_file
    from monitor.progress import wanted

    run = ingest_file(Path(args.samples), database, label_source=args.label_source, source="reference",
                      progress=wanted(args))
    if run.span is None:
        raise CommandError(f"{args.samples} has no usable sample line")
    print(f"reference samples from {args.samples}: {run.stored} stored, {run.duplicates} already present, "
          f"{run.labels} labels, {run.bad} bad lines", file=sys.stderr)
    left = _wait_scored(database.sessions, run.ids, args.wait, wanted(args))
    if left:
        raise CommandError(f"{left} of {len(run.ids)} reference samples are not scored yet: is `vlmwatch daemon` "
                           f"running with an active probe for {args.model}? Run this command again once they are "
                           "(ingest is idempotent), or give --wait more seconds", code=3)
    return run.span[0], run.span[1] + timedelta(seconds=1)


def _set(args: argparse.Namespace) -> int:
    from monitor.calibration.reference import CalibrationReferenceError, set_reference
    from monitor.commands._storage import open_database

    if bool(args.window) == bool(args.samples):
        raise CommandError("reference set needs exactly one of --window START..END or --samples FILE")
    if args.samples:
        existing_file(args.samples, "samples file")
    with open_database(args) as database:
        window = _window_of_samples(args, database) if args.samples else args.window
        with database.sessions() as s:
            try:
                ref = set_reference(s, database.settings, args.model, *window, probe_version=args.probe_version)
            except CalibrationReferenceError as e:
                raise CommandError(str(e)) from None
            s.commit()
            out = {"reference_id": ref.id, "model": ref.model, "probe_version_id": ref.probe_version_id,
                   "window_start": ref.window_start.isoformat(), "window_end": ref.window_end.isoformat(),
                   **_source_stats(ref, ("n", "disagreement"))}
    print(json.dumps(out, indent=2))
    print("detectors re-tune on the new reference (run `vlmwatch detect tune` to do it now)", file=sys.stderr)
    return 0


def _source_stats(ref: Any, keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``keys`` of each evidence source's statistics in a reference row."""
    return {src: {k: v.get(k) for k in keys} for src, v in ref.stats.items() if isinstance(v, dict)}


def _show(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from monitor.commands._storage import open_database
    from storage.models import Reference

    with open_database(args) as database, database.sessions() as s:
        q = select(Reference).where(Reference.active.is_(True))
        if args.model:
            q = q.where(Reference.model == args.model)
        rows = [{"id": r.id, "model": r.model, "probe_version_id": r.probe_version_id, "pinned": r.pinned,
                 "window_start": r.window_start.isoformat(), "window_end": r.window_end.isoformat(),
                 **_source_stats(r, ("n", "complete", "disagreement"))}
                for r in s.scalars(q.order_by(Reference.id))]
    print(json.dumps(rows, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_actions(subparsers, "reference", help="pin or show the reference statistics drift is measured against")
    s = add_command(
        sub, "set", _set, help="pin a time window's evidence, or a labelled samples file, as the reference of a model's probe",
        description="Pin the reference a model's probe is compared against: the labelled evidence in a time "
        "window (--window), or a labelled samples file (--samples: a validation set answered by the served model, "
        "one sample a line as `vlmwatch ingest` reads, with `label`), which is ingested, scored by the running "
        "daemon and pinned over the span of its `ts` (give the lines times before live traffic, or that traffic "
        "joins the reference). Label-based detectors arm once the reference has calibration.min_labels "
        "labelled samples; `vlmwatch status` says where each model stands. Exit status 3: the daemon did not "
        "score the file's samples within --wait seconds.")
    s.add_argument("--model", required=True, help="served model name")
    s.add_argument("--window", default=None, type=parse_window, metavar="START..END",
                   help="ISO 8601 times, e.g. 2025-01-01T00:00Z..2025-01-02T00:00Z (UTC when no offset)")
    s.add_argument("--samples", default=None, metavar="FILE.jsonl",
                   help="a labelled samples file to ingest, wait for the daemon to score, and pin")
    s.add_argument("--label-source", default="ground_truth", choices=("ground_truth", "human"),
                   help="label source recorded for the file's `label` field (default ground_truth)")
    s.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                   help="with --samples: how long to wait for the daemon to score them (default 600)")
    add_quiet_flag(s)
    s.add_argument("--probe-version", default=None, help="probe version (default: the active one)")
    sh = add_command(sub, "show", _show, help="print the active references")
    sh.add_argument("--model", default=None)
