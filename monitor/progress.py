"""Progress of long commands, one way for all of them.

``progress(total, desc, unit, enabled)`` returns a bar with ``update(n)``, ``close()`` and
``set_postfix_str(text)``, usable as a context manager or wrapping an iterable
(``track(iterable, ...)``):

* on a terminal (stderr is a TTY): a tqdm bar with count, rate and time left;
* otherwise (a log file, CI, a pipe): one line per stage on stderr when it ends,
  ``<desc>: <n> <unit> in <s> s (<rate> <unit>/s)``;
* ``enabled=False`` (``--quiet``, ``--json``): nothing at all.

Commands decide ``enabled`` with :func:`wanted` from their ``--quiet`` / ``--json`` flags, so a
machine-readable stdout is never mixed with progress and ``--quiet`` means quiet.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = ["progress", "track", "wanted", "add_quiet_flag", "LineProgress", "NoProgress"]

T = TypeVar("T")


def wanted(args: argparse.Namespace) -> bool:
    """Progress is shown unless the command was asked for ``--quiet`` or ``--json`` output."""
    return not (getattr(args, "quiet", False) or getattr(args, "json", False))


def add_quiet_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress (a bar with rate and time left on a terminal, a line per stage otherwise)")


class NoProgress:
    """The disabled bar: every call is a no-op."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "NoProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LineProgress(NoProgress):
    """Not a terminal: one line per stage when it closes, with its count, time and rate."""

    def __init__(self, desc: str, unit: str, total: int | None, stream: TextIO) -> None:
        self.desc, self.unit, self.total, self.stream = desc, unit, total, stream
        self.n = 0
        self.note = ""
        self.t0 = time.monotonic()
        self.closed = False

    def set_postfix_str(self, text: str) -> None:
        self.note = text

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        secs = time.monotonic() - self.t0
        rate = f", {self.n / secs:.1f} {self.unit}/s" if secs > 0 and self.n else ""
        of = f"/{self.total}" if self.total is not None and self.total != self.n else ""
        note = f", {self.note}" if self.note else ""
        print(f"{self.desc}: {self.n}{of} {self.unit} in {secs:.1f} s{rate}{note}", file=self.stream, flush=True)


def progress(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
             stream: TextIO | None = None, **tqdm_kwargs: Any) -> Any:
    """A progress bar for one stage (see the module docstring for what each mode shows)."""
    out = stream or sys.stderr
    if not enabled:
        return NoProgress()
    if not out.isatty():
        return LineProgress(desc, unit, total, out)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=out, dynamic_ncols=True, **tqdm_kwargs)


def track(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
          enabled: bool = True, stream: TextIO | None = None) -> Iterator[T]:
    """Iterate ``iterable`` while a :func:`progress` bar counts its items."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress(total, desc, unit, enabled, stream) as bar:
        for item in iterable:
            yield item
            bar.update(1)
