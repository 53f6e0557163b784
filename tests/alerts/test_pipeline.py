"""The delivery loop claims on while sends are in flight: a hanging webhook holds up nothing."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.alerts.channels import WebhookChannel
from falcon.alerts.delivery import DeliveryWorker
from falcon.alerts.outbox import queue_alert
from falcon.alerts.settings import AlertSettings
from falcon.db.engine import transaction
from falcon.db.models import AlertDelivery

from ..jobs.procs import wait_until
from .servers import WebhookReceiver


def _queue(sessions: sessionmaker[Session], channel: str, message: str) -> int:
    with transaction(sessions) as s:
        return queue_alert(s, rule_id=None, channels=[channel], message=message).id


def _row(sessions: sessionmaker[Session], event_id: int) -> AlertDelivery:
    with sessions() as s:
        return s.scalars(select(AlertDelivery).where(AlertDelivery.event_id == event_id)).one()


def test_a_hanging_webhook_holds_up_nothing_else(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver
) -> None:
    other = WebhookReceiver()
    s = AlertSettings(slack_webhook_url=receiver.url(), discord_webhook_url=other.url(),
                      http_timeout_s=30.0, poll_interval_s=3600.0, backoff_base_s=60.0,
                      backoff_cap_s=60.0)
    channels: dict[str, Any] = {
        "slack": WebhookChannel("slack", s.slack_webhook_url, key="text", timeout_s=30.0),
        "discord": WebhookChannel("discord", s.discord_webhook_url, key="content",
                                  timeout_s=30.0),
    }
    worker = DeliveryWorker(engine, s, channels=channels)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        receiver.script.append("hang")
        stuck = _queue(sessions, "slack", "first: the receiver hangs on it")
        wait_until(lambda: receiver.received, "the first send to hang")
        # While it hangs: another channel's alert, and a later one on the same channel.
        elsewhere = _queue(sessions, "discord", "another channel")
        later = _queue(sessions, "slack", "same channel, later")
        wait_until(lambda: _row(sessions, elsewhere).status == "sent"
                   and _row(sessions, later).status == "sent", "the other alerts")
        # ... went out while the first was still in flight: claimed once, no error recorded.
        first = _row(sessions, stuck)
        assert (first.status, first.attempts, first.last_error) == ("pending", 1, None)
        assert other.event_ids() == [str(elsewhere)]
        assert receiver.event_ids() == [str(stuck), str(later)]
    finally:
        receiver.release()
        stop.set()
        worker.wake()
        thread.join(60)
        other.close()
    # The hung send ended without an answer: recorded as a failed try, kept for a retry.
    first = _row(sessions, stuck)
    assert first.status == "pending" and first.last_error
