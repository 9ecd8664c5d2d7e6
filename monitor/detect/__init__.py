"""Drift detectors: CUSUMs on probe–evidence disagreement and calibration residual, ADWIN early
warnings, Evidently window drift; thresholds tuned by simulation (:mod:`monitor.detect.tuning`).

Entry points: :func:`run_detect` (daemon job), :func:`monitor.detect.tune.tune_detectors`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_detect"]


def run_detect(session_factory: Any, settings: Any, now: Any = None) -> Any:
    """See :func:`monitor.detect.runner.run_detect` (imported lazily: numpy, river)."""
    from monitor.detect.runner import run_detect as _run

    return _run(session_factory, settings, now)
