"""Reporting of errors that fail-open code swallows (collectors, delivery loops).

Production: the error is logged and counted. Tests flip ``capture`` so ``tests/conftest.py``
re-raises what was swallowed.

``with swallowed("where", log) as guard:`` is the one way to write a fail-open block (modelled on
sentry-python's ``capture_internal_exceptions``): an :class:`Exception` raised inside is reported
with :func:`report_internal_error` and not propagated; ``guard.error`` holds it afterwards (None
when the block finished), so the caller can count the loss.
"""

from __future__ import annotations

import logging
from types import TracebackType

__all__ = ["report_internal_error", "swallowed", "captured", "capture"]

captured: list[BaseException] = []
capture = False


def report_internal_error(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log an internal error that is swallowed so that the host is not hurt."""
    logger.error("internal error in %s (swallowed): %r", what, exc, exc_info=exc)
    if capture:
        captured.append(exc)


class swallowed:  # noqa: N801 - a context manager, named like contextlib.suppress
    """Report and swallow an :class:`Exception` raised in the block (BaseException passes)."""

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self.logger = logger
        self.error: Exception | None = None

    def __enter__(self) -> swallowed:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if not isinstance(exc, Exception):
            return False
        self.error = exc
        report_internal_error(self.logger, self.what, exc)
        return True
