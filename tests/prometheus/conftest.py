"""Helpers for the Prometheus tests in this folder.

The ``promtool`` and ``prometheus_bin`` fixtures live in ``tests/conftest.py``: without Debian's
``prometheus`` package these tests skip saying how to install it; with
``VLMWATCH_REQUIRE_PROMETHEUS=1`` (set by ``.ci/run``, which installs the package) they fail instead.
"""

from __future__ import annotations

import subprocess


def run_promtool(promtool: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], input=None if stdin is None else stdin.decode(), capture_output=True,
                          text=True, timeout=60)
