"""CI must run every service-backed test or fail it: no silent skips.

With ``VLMWATCH_REQUIRE_PG=1`` (set by ``.ci/run``) a PostgreSQL test whose server is missing
fails; with ``VLMWATCH_REQUIRE_ALERTMANAGER=1`` (also set by ``.ci/run``) so does an Alertmanager
test without the binary, and with ``VLMWATCH_REQUIRE_BROWSER=1`` a browser test without chromium. First-party imports are plain imports: ``importorskip`` would turn an
import bug into a skip. These tests run the real test modules in a pytest subprocess against a
PostgreSQL URL that refuses connections and a PATH without Alertmanager.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("monitor", "collectors", "storage", "alerts", "tests")


def _outcomes(tmp_path: Path, args: list[str], env: dict[str, str]) -> dict[str, str]:
    """Run pytest on ``args``; test id -> passed | failed | skipped (from its JUnit XML)."""
    xml = tmp_path / "report.xml"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VLMWATCH_") and k != "CI"}
    full_env.update(env, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *args],
                   cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kind = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                kind = "failed"
            elif child.tag == "skipped":
                kind = "skipped"
        out[f"{case.get('classname')}::{case.get('name')}"] = kind
    return out


def test_postgres_tests_fail_instead_of_skipping_when_required(tmp_path: Path) -> None:
    got = _outcomes(tmp_path, ["tests/daemon/test_leases.py", "tests/daemon/test_two_daemons_pg.py", "-k", "postgres"],
                    {"VLMWATCH_REQUIRE_PG": "1", "VLMWATCH_TEST_PG_URL": "postgresql+psycopg://postgres@127.0.0.1:1/test"})
    assert len(got) >= 3, got  # the parametrised lease tests and the two-daemon test
    assert set(got.values()) == {"failed"}, got


def test_alertmanager_tests_fail_instead_of_skipping_when_required(tmp_path: Path) -> None:
    bare = tmp_path / "bin"  # a PATH with the Python we run, but no alertmanager
    bare.mkdir()
    got = _outcomes(tmp_path, ["tests/alerts/test_alertmanager.py", "-k", "not postgres"],
                    {"VLMWATCH_REQUIRE_ALERTMANAGER": "1", "PATH": str(bare)})
    assert got and set(got.values()) == {"failed"}, got


def test_browser_tests_fail_instead_of_skipping_when_required(tmp_path: Path) -> None:
    got = _outcomes(tmp_path, ["tests/ui/test_browser.py"],
                    {"VLMWATCH_REQUIRE_BROWSER": "1", "VLMWATCH_CHROMIUM": str(tmp_path / "no-chromium")})
    assert len(got) >= 5 and set(got.values()) == {"failed"}, got


def _calls(pattern: str) -> list[str]:
    hits = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    return hits


def test_no_importorskip_of_first_party_modules() -> None:
    names = "|".join(FIRST_PARTY)
    assert _calls(rf"importorskip\(\s*['\"]({names})\b") == []


def test_no_direct_pytest_skip_in_test_modules() -> None:
    """A test skips through a marker with its reason or a conftest helper, never ``pytest.skip(...)``
    inline, where a missing service would pass CI silently."""
    hits = [h for h in _calls(r"pytest\.skip\(") if not h.startswith("tests/conftest.py:")]
    assert hits == []


@pytest.mark.parametrize("needle", ["VLMWATCH_REQUIRE_PG=1", "VLMWATCH_REQUIRE_ALERTMANAGER=1", "VLMWATCH_REQUIRE_BROWSER=1"])
def test_ci_requires_the_services(needle: str) -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert f"export {needle}" in script
    for service in ("alertmanager", "chromium"):
        assert "|| true" not in "\n".join(line for line in script.splitlines() if service in line)
