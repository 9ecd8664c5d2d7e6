"""Alerts: rules and lifecycle (:mod:`alerts.lifecycle`), channels (:mod:`alerts.channels`),
payload and signature (:mod:`alerts.payload`), outbox delivery (:mod:`alerts.outbox`).

Imports only ``storage`` (DESIGN.md dependency direction); config sections are duck-typed.
"""

__all__: list[str] = []
