"""Stale-probe guard: a probe is only used on the exact model (fingerprint) it was trained on.

A new deploy of a served model changes its fingerprint (hash of config and weights). From then on
its active probe would read hidden states it has never seen; rather than emit confident nonsense,
the scorer raises :class:`ProbeStaleError` and scoring for that model stops until a probe trained
on the new model is activated. The daemon's score job (``monitor.daemon.scoring``) turns the
error into the ``probe_stale`` alert and resolves it on the next load whose probe matches
(``alerts.builtin``).
"""

from __future__ import annotations

__all__ = ["ProbeStaleError", "check_fresh"]


class ProbeStaleError(RuntimeError):
    """The served model's fingerprint differs from the one its probe was trained on."""

    def __init__(self, model: str, probe_version: str, expected: str, actual: str) -> None:
        super().__init__(
            f"probe {probe_version} of model {model!r} is stale: it was trained on model fingerprint "
            f"{expected[:12]}…, the served model is {actual[:12]}…; train and activate a new probe"
        )
        self.model, self.probe_version, self.expected, self.actual = model, probe_version, expected, actual


def check_fresh(model: str, probe_version: str, probe_fingerprint: str, served_fingerprint: str) -> None:
    """Raise :class:`ProbeStaleError` unless the two fingerprints are equal."""
    if probe_fingerprint != served_fingerprint:
        raise ProbeStaleError(model, probe_version, probe_fingerprint, served_fingerprint)
