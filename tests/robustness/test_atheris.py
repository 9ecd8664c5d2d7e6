"""Coverage-guided fuzzing (atheris / libFuzzer) of every parser of outside input, in a process of
its own (tests/robustness/atheris_target.py): 50,000 inputs, no crash."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_atheris(corpus: Path, runs: int, timeout: float = 300) -> dict[str, int]:
    """Run the target; returns libFuzzer's closing figures (runs, cov, ft, corp) or raises on a crash."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "tests.robustness.atheris_target", str(corpus), f"-runs={runs}",
                           "-seed=1", f"-artifact_prefix={corpus.parent}/"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    m = re.search(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)", out)
    assert m, out[-2000:]
    return dict(zip(("runs", "coverage_edges", "features", "corpus"), map(int, m.groups())))


def test_atheris_finds_no_crash(tmp_path):
    fig = run_atheris(tmp_path / "corpus", 50_000)
    assert fig["runs"] == 50_000 and fig["coverage_edges"] > 100, fig
