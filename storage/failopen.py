"""Reporting of errors that fail-open code swallows (collectors, delivery loops).

Production: the error is logged and counted. Tests flip ``capture`` so ``tests/conftest.py``
re-raises what was swallowed.
"""

from __future__ import annotations

import logging

__all__ = ["report_internal_error", "captured", "capture"]

captured: list[BaseException] = []
capture = False


def report_internal_error(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log an internal error that is swallowed so that the host is not hurt."""
    logger.error("internal error in %s (swallowed): %r", what, exc, exc_info=exc)
    if capture:
        captured.append(exc)
