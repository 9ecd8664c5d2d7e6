"""``vlmwatch ingest FILE.jsonl``: load a samples file (idempotent, batched).

Bad lines are reported on stderr with their line number and reason and skipped; good lines are
stored; a summary closes the run. Exit code 1 if any line was bad, 2 if nothing could start.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.commands import add_command, existing_file
from monitor.progress import add_quiet_flag, wanted

if TYPE_CHECKING:
    from monitor.commands._storage import Database

__all__ = ["register", "ingest_file"]

PROGRESS_BYTES = 1_000_000  # files from this size on show progress (bytes read, rate, time left)
BATCH_BYTES = 64_000_000  # flush early when a batch's images add up to this much


class _Run:
    def __init__(self, session_factory: Any, max_image_bytes: int, label_source: str, tasks: Any = None) -> None:
        self.factory = session_factory
        self.tasks = tasks  # collectors.tasks (storage.tasks.TaskRules)
        self.max_image_bytes = max_image_bytes
        self.label_source = label_source
        self.records: list[Any] = []
        self.line_numbers: list[int] = []
        self.batch_bytes = 0
        self.stored = self.duplicates = self.bad = self.images = self.labels = self.lines = 0
        self.ids: list[str] = []
        self.span: tuple[Any, Any] | None = None  # first and last ts of the lines that parsed

    def bad_line(self, n: int, reason: str) -> None:
        self.bad += 1
        print(f"line {n}: {reason}", file=sys.stderr)

    def add(self, n: int, record: Any) -> None:
        self.records.append(record)
        self.ids.append(record.id)
        lo, hi = self.span or (record.ts, record.ts)
        self.span = (min(lo, record.ts), max(hi, record.ts))
        self.line_numbers.append(n)
        self.batch_bytes += len(record.image or b"")

    def flush(self) -> None:
        from storage.repo_samples import ingest_isolated

        if not self.records:
            return
        res = ingest_isolated(self.factory, self.records, max_image_bytes=self.max_image_bytes,
                              label_source=self.label_source, tasks=self.tasks)  # a line the database refuses is a bad line
        for rej in res.rejected:
            self.bad_line(self.line_numbers[rej.index], rej.reason)
        self.stored += len(res.inserted)
        self.duplicates += res.duplicates
        self.images += res.images_inserted
        self.labels += res.labels_inserted
        self.records, self.line_numbers, self.batch_bytes = [], [], 0


def ingest_file(path: Path, database: Database, *, batch_size: int = 500, label_source: str = "ground_truth",
                source: str = "ingest", progress: bool = True) -> _Run:
    """Load a samples file into storage (bad lines reported on stderr and skipped); the run's totals.

    ``run.ids`` are the ids of every line that parsed, stored now or already present; ``run.span``
    their first and last ``ts``.
    """
    from monitor.progress import progress as progress_bar
    from storage.jsonl import LineError, iter_lines, parse_sample_line

    max_bytes = database.settings.storage.max_image_bytes
    run = _Run(database.sessions, max_bytes, label_source, database.settings.task_rules())
    base_dir = path.resolve().parent
    size = path.stat().st_size
    bar = progress_bar(size, f"ingest {path.name}", "B", enabled=progress and size >= PROGRESS_BYTES,
                       unit_scale=True, unit_divisor=1024)
    try:
        for n, text in iter_lines(path):
            run.lines += 1
            bar.update(len(text.encode()))
            try:
                record = parse_sample_line(text, base_dir, max_bytes, source=source)
            except LineError as e:
                run.bad_line(n, str(e))
                continue
            run.add(n, record)
            if len(run.records) >= batch_size or run.batch_bytes >= BATCH_BYTES:
                run.flush()
        run.flush()
    finally:
        bar.close()
    return run


def _ingest(args: argparse.Namespace) -> int:
    from monitor.commands._storage import open_database

    path = existing_file(args.file, "samples file")
    with open_database(args) as database:
        t0 = time.monotonic()
        run = ingest_file(path, database, batch_size=args.batch_size, label_source=args.label_source,
                          source=args.source, progress=wanted(args))
    secs = time.monotonic() - t0
    print(
        f"ingest {path}: {run.lines} lines, {run.stored} samples stored, {run.duplicates} already present, "
        f"{run.bad} bad lines skipped; {run.images} new images, {run.labels} labels ({secs:.1f} s)"
    )
    return 1 if run.bad else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "ingest", _ingest, help="load a samples file (JSONL); idempotent, bad lines reported")
    p.add_argument("file", metavar="FILE.jsonl", help="one sample a line: id, ts, model, image, prompt, answer, ...")
    p.add_argument("--batch-size", type=int, default=500, help="samples per transaction (default 500)")
    p.add_argument(
        "--label-source", default="ground_truth", choices=("ground_truth", "human", "self_consistency"),
        help="label source recorded for the lines' `label` field (default ground_truth)",
    )
    p.add_argument("--source", default="ingest", help="collector name recorded on the samples (default ingest)")
    add_quiet_flag(p)
