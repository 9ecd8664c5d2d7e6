"""Self-consistency spot checks: K sampled answers from one shared prefill, or the exact
one-token distribution, with a budgeted, boundary-prioritised selection policy.

Entry point for the daemon: :func:`monitor.spotcheck.job.run_spotcheck` (docs/CONTRACTS.md,
"Spot-check entry points"). torch and transformers load only when a check runs.
"""

from monitor.spotcheck.job import SpotcheckRun, run_spotcheck

__all__ = ["run_spotcheck", "SpotcheckRun"]
