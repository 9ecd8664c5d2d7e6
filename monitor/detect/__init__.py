"""Drift detectors: CUSUMs on probe–evidence disagreement and calibration residual, ADWIN early
warnings, Evidently window drift; thresholds tuned by simulation (:mod:`monitor.detect.tuning`).

Entry points: :func:`run_detect` (daemon job), :func:`monitor.detect.tune.tune_detectors`,
:func:`monitor.detect.readiness.readiness` (which detectors are armed, for ``vlmwatch status``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session, sessionmaker

    from monitor.config import Settings
    from monitor.detect.runner import DetectResult

__all__ = ["run_detect"]


def run_detect(session_factory: sessionmaker[Session], settings: Settings, now: datetime | None = None) -> DetectResult:
    """See :func:`monitor.detect.runner.run_detect` (imported lazily: numpy, river)."""
    from monitor.detect.runner import run_detect as _run

    return _run(session_factory, settings, now)
