"""Alerts: rules (:mod:`alerts.rules`), lifecycle (:mod:`alerts.lifecycle`), the built-in alerts
(:mod:`alerts.builtin`), channels (:mod:`alerts.channels`), payload and signature
(:mod:`alerts.payload`), outbox delivery (:mod:`alerts.outbox`).

Imports only ``storage`` (DESIGN.md dependency direction); what it reads of the settings is the
protocols of :mod:`alerts.settings`.
"""

__all__: list[str] = []
