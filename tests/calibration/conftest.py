"""Re-use the monitored-world fixtures of tests/detect (one definition for both suites)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_detect_world", Path(__file__).parents[1] / "detect" / "conftest.py")
_mod = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules[_spec.name] = _mod  # dataclasses look their module up there
_spec.loader.exec_module(_mod)  # type: ignore[union-attr]

world = _mod.world
fast_settings = _mod.fast_settings
