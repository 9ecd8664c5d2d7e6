"""`vlmwatch --help` answers fast, lists every command, and imports no heavy library."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

from monitor.cli import COMMAND_MODULES

EXE = Path(sys.executable).parent / "vlmwatch"
HEAVY = ("torch", "transformers", "evidently", "sklearn", "matplotlib", "onnxruntime", "pandas", "scipy")


def _built_commands() -> list[str]:
    return [m.rsplit(".", 1)[1] for m in COMMAND_MODULES if importlib.util.find_spec(m) is not None]


def test_help_lists_the_commands_in_under_2_seconds():
    best = float("inf")
    for _ in range(3):  # best of three: the runner's 2 cores are shared
        t0 = time.perf_counter()
        res = subprocess.run([str(EXE), "--help"], capture_output=True, text=True, timeout=60)
        best = min(best, time.perf_counter() - t0)
        assert res.returncode == 0, res.stderr
        if best < 2.0:
            break
    assert best < 2.0, f"vlmwatch --help took {best:.2f} s"
    commands = _built_commands()
    assert {"db", "status", "ingest", "labels"} <= set(commands)
    for name in commands:
        assert f"\n    {name} " in res.stdout or f"\n    {name}\n" in res.stdout, f"{name} missing from --help"


def test_building_the_parser_imports_no_heavy_library():
    code = (
        "import sys; from monitor.cli import build_parser; build_parser(); "
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"--help imports heavy modules: {res.stdout.strip()}"
