"""Shared test fixtures.

Fail-open code (collectors, delivery) swallows its own errors in production; in tests those
errors are re-raised at teardown (the ``internal_errors`` fixture) so bugs cannot hide behind
"fail open". Code reports such errors through ``storage.failopen.report_internal_error``.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PG_URL = os.environ.get("VLMWATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _cuda() -> bool:
    try:
        import torch
    except Exception:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("gpu" in item.keywords for item in items) and not _cuda():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def internal_errors():
    """Re-raise errors that fail-open code swallowed during the test."""
    from storage import failopen

    failopen.captured.clear()
    failopen.capture = True
    yield failopen.captured
    failopen.capture = False
    errors = list(failopen.captured)
    failopen.captured.clear()
    if errors:
        raise AssertionError(f"fail-open code swallowed {len(errors)} internal error(s): {errors[0]!r}") from errors[0]
