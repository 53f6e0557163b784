"""Alerts: rules in the database, evaluated on every bar and trading event, delivered reliably.

For the trader (one engine per process that reads bars)::

    from falcon.alerts import AlertEngine
    alerts = AlertEngine(engine)                 # loads enabled rules, reloads every 10 s
    alerts.on_bar(bar, arrived_at=received)      # or on_bars(batch, arrived_at)
    alerts.on_fill(fill); alerts.on_halt(account); alerts.on_stale(stale)

For the dashboard and the CLI: :func:`add_rule`, :func:`list_rules`, :func:`remove_rule`,
:func:`set_enabled`, :func:`test_rule` (each takes a session; the caller commits).
For delivery: ``falcon alerts run`` (:func:`falcon.alerts.service.run_delivery_service`).
"""

from falcon.alerts.engine import AlertEngine, FiredAlert
from falcon.alerts.rules import (
    KINDS,
    add_rule,
    get_rule,
    list_rules,
    remove_rule,
    set_enabled,
    test_rule,
    validate,
)
from falcon.alerts.settings import AlertSettings

__all__ = [
    "KINDS",
    "AlertEngine",
    "AlertSettings",
    "FiredAlert",
    "add_rule",
    "get_rule",
    "list_rules",
    "remove_rule",
    "set_enabled",
    "test_rule",
    "validate",
]
