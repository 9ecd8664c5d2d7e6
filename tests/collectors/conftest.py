"""Fixtures for collector tests: a canned upstream and a running proxy, both real servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors.canned_upstream import start_canned
from tests.collectors.helpers import RunningProxy, png_bytes


@pytest.fixture(scope="session")
def png() -> bytes:
    return png_bytes(1)


@pytest.fixture
def canned() -> Iterator[tuple[Any, int]]:
    srv, port, stop = start_canned()
    yield srv, port
    stop()


@pytest.fixture
def make_proxy(tmp_path: Path) -> Iterator[Any]:
    made: list[RunningProxy] = []

    def make(upstream_url: str, **kw: Any) -> RunningProxy:
        p = RunningProxy(upstream_url, tmp_path / f"spool{len(made)}", **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
