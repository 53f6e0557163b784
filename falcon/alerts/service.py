"""``falcon alerts run``: the delivery service, and a one-shot delivery for ``alerts test``.

The service tells systemd READY once it can reach the database, pings WATCHDOG from its loop (so
the watchdog proves deliveries are being made, not merely that the process exists), and on SIGTERM
stops claiming, lets the sends in flight finish (each bounded by its timeout) and exits 0 after
STOPPING. A row it had claimed but not finished is simply claimed again after its lease.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine, select

from falcon.alerts.delivery import DeliveryWorker
from falcon.alerts.settings import AlertSettings
from falcon.db.models import AlertDelivery

log = logging.getLogger(__name__)

__all__ = ["deliver_now", "run_delivery_service"]


def run_delivery_service(engine: Engine, settings: AlertSettings, *, name: str = "falcon-alerts",
                         worker: DeliveryWorker | None = None) -> int:
    """Run the delivery worker as a service until SIGTERM/SIGINT; the exit code."""
    from falcon.services.loop import ServiceControl, run_service

    delivery = worker or DeliveryWorker(engine, settings)

    def body(control: ServiceControl) -> int:
        control.ready("delivering alerts")
        delivery.run(control.stop_event, ping=control.ping)
        control.stopping_now("alert delivery stopped")
        log.info("%s: %s", name, dict(delivery.stats) or "nothing delivered")
        return 0

    return run_service(body, name=name)


def deliver_now(engine: Engine, settings: AlertSettings, event_id: int, *,
                timeout_s: float = 30.0) -> dict[str, tuple[str, str | None]]:
    """Send ``event_id``'s pending deliveries from this process; channel -> (status, error).

    Tries each row once (no waiting through backoff): what failed stays pending for the service.
    """
    worker = DeliveryWorker(engine, settings)
    try:
        deadline = time.monotonic() + timeout_s
        while worker.run_once(event_id=event_id) and time.monotonic() < deadline:
            pass
    finally:
        worker.close()
    with engine.connect() as conn:
        rows = conn.execute(
            select(AlertDelivery.channel, AlertDelivery.status, AlertDelivery.last_error)
            .where(AlertDelivery.event_id == event_id)
        ).all()
    return {r.channel: (r.status, r.last_error) for r in rows}
