"""Calibration metrics (:mod:`.metrics`), evidence joins (:mod:`.evidence`), references
(:mod:`.reference`) and the history job (:func:`monitor.calibration.history.run_calibrate`)."""

__all__: list[str] = []
