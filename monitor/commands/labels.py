"""``vlmwatch labels import FILE.jsonl``: correctness labels by sample id or response id.

Lines: ``{"sample_id"|"response_id": ..., "correct": true|false, "source": "human"}``. A label by
response id whose sample has not arrived yet waits and is joined when the sample is ingested.
Exit code 1 if any line was bad.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from monitor.commands import add_actions, add_command, existing_file

__all__ = ["register"]


def _import(args: argparse.Namespace) -> int:
    from monitor.commands._storage import open_database
    from storage.jsonl import LineError, iter_lines, parse_label_line
    from storage.repo_labels import add_labels

    path = existing_file(args.file, "labels file")
    totals = {"inserted": 0, "updated": 0, "unchanged": 0, "waiting": 0}
    bad = lines = 0
    batch: list = []
    numbers: list[int] = []

    def flush(sessions: Any) -> None:
        nonlocal bad
        if not batch:
            return
        with sessions.begin() as session:
            res = add_labels(session, batch)
        for rej in res.rejected:
            bad += 1
            print(f"line {numbers[rej.index]}: {rej.reason}", file=sys.stderr)
        for k in totals:
            totals[k] += getattr(res, k)
        batch.clear()
        numbers.clear()

    with open_database(args) as database:
        for n, text in iter_lines(path):
            lines += 1
            try:
                batch.append(parse_label_line(text))
                numbers.append(n)
            except LineError as e:
                bad += 1
                print(f"line {n}: {e}", file=sys.stderr)
            if len(batch) >= args.batch_size:
                flush(database.sessions)
        flush(database.sessions)
    print(
        f"labels {path}: {lines} lines, {totals['inserted']} labels stored ({totals['waiting']} waiting for their "
        f"sample), {totals['updated']} updated, {totals['unchanged']} unchanged, {bad} bad lines skipped"
    )
    return 1 if bad else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_actions(subparsers, "labels", help="correctness labels: import FILE.jsonl")
    imp = add_command(sub, "import", _import, help="import labels {sample_id|response_id, correct, source} from JSONL")
    imp.add_argument("file", metavar="FILE.jsonl")
    imp.add_argument("--batch-size", type=int, default=1000, help="labels per transaction (default 1000)")
