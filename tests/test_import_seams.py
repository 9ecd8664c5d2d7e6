"""The statistics side never imports torch or the model side.

`monitor/calibration`, `monitor/detect` and `monitor/report` read scores and labels from the
database; they must stay importable (and fast) on a box without the model stack, the way
`vlmwatch --help` is (tests/test_cli_help.py). A fresh interpreter imports every module under
those packages and reports which model-side modules ended up in `sys.modules`.
"""

from __future__ import annotations

import json
import subprocess
import sys

STATISTICS_PACKAGES = ("monitor.calibration", "monitor.detect", "monitor.report")
MODEL_SIDE = ("torch", "transformers", "monitor.adapter", "monitor.probe.scorer")

_PROBE = """
import importlib, json, pkgutil, sys
packages, model_side = json.loads(sys.argv[1]), json.loads(sys.argv[2])
imported, leaks = [], {}
for name in packages:
    pkg = importlib.import_module(name)
    for mod in [name] + [m.name for m in pkgutil.walk_packages(pkg.__path__, name + ".")]:
        importlib.import_module(mod)
        imported.append(mod)
        for heavy in model_side:
            if heavy in sys.modules and heavy not in leaks:
                leaks[heavy] = mod
print(json.dumps({"imported": imported, "leaks": leaks}))
"""


def test_statistics_side_imports_no_model_side_module():
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(STATISTICS_PACKAGES), json.dumps(MODEL_SIDE)],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for pkg in STATISTICS_PACKAGES:  # the walk really reached each package's modules
        assert any(m.startswith(pkg + ".") for m in out["imported"]), f"no module found under {pkg}"
    leaks = ", ".join(f"{heavy} (first seen after importing {mod})" for heavy, mod in out["leaks"].items())
    assert not out["leaks"], f"the statistics side imports the model side: {leaks}"
