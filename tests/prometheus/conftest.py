"""Prometheus binaries for the tests in this folder: Debian's ``prometheus`` package (it ships promtool).

Without them these tests skip with a message saying how to install them; with
``VLMWATCH_REQUIRE_PROMETHEUS=1`` (set by ``.ci/run``, which installs the package) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} not found: `apt-get install -y prometheus` provides prometheus and promtool (.ci/run installs it)"
    if os.environ.get("VLMWATCH_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(msg + "; VLMWATCH_REQUIRE_PROMETHEUS=1 forbids skipping")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def promtool() -> str:
    return _binary("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _binary("prometheus")


def run_promtool(promtool: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], input=None if stdin is None else stdin.decode(), capture_output=True,
                          text=True, timeout=60)
