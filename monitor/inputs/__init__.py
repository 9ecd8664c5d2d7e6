"""Label-free input drift: features of every scored sample, tested per window against a reference.

:mod:`monitor.inputs.features` (what is measured), :mod:`monitor.inputs.record` (written by the
score job), :mod:`monitor.inputs.drift` (the tests and their tuning), :mod:`monitor.inputs.job`
(the daemon's ``inputs`` job and the ``input_drift`` alert), :mod:`monitor.inputs.summary`
(what the report, the JSON summary and ``/metrics`` show).
"""

from monitor.inputs.job import pin_reference, run_input_drift

__all__ = ["run_input_drift", "pin_reference"]
