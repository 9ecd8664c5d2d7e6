"""The tiny VLM fixtures the adapter and fixture-server tests share (a helper, not a test module)."""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["FAMILY_FIXTURE", "PROMPT", "fixture_dir"]

FAMILY_FIXTURE = {"llava": "tiny-llava", "paligemma": "tiny-paligemma"}
PROMPT = "Is there a red circle in the image?"


def fixture_dir(family: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped fixture when it is there, else an untrained one of the same architecture."""
    from monitor.fixtures.registry import built_fixtures

    shipped = built_fixtures().get(FAMILY_FIXTURE[family])
    if shipped is not None:
        return shipped
    from monitor.fixtures.build import build_untrained

    return build_untrained(family, tmp_path_factory.mktemp(family), seed=0)
