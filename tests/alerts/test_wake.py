"""A queued alert reaches the delivery worker at once, by the mechanism the setup allows.

Every worker here polls once an hour: a delivery within the test's patience can only come from
the wake-up under test, and each test also checks the worker's own count of that wake-up.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.alerts.channels import WebhookChannel
from falcon.alerts.delivery import DeliveryWorker
from falcon.alerts.outbox import due_channels, queue_alert
from falcon.alerts.settings import AlertSettings
from falcon.db.engine import make_engine, session_factory, transaction
from falcon.db.migrate import upgrade
from falcon.db.models import AlertDelivery

from ..conftest import new_pg_database
from ..jobs.procs import wait_until
from ..pgserver import PostgresServer
from .servers import WebhookReceiver

HOUR = 3600.0


def _settings(receiver: WebhookReceiver, **kw: Any) -> AlertSettings:
    base: dict[str, Any] = {"slack_webhook_url": receiver.url(), "http_timeout_s": 5.0,
                            "poll_interval_s": HOUR, "change_poll_s": HOUR}
    base.update(kw)
    return AlertSettings(**base)


@contextmanager
def running(engine: Engine, s: AlertSettings, **kw: Any) -> Iterator[DeliveryWorker]:
    """A worker running in a thread, already asleep after its first (empty) pass."""
    channels: dict[str, Any] = {"slack": WebhookChannel("slack", s.slack_webhook_url,
                                                        key="text", timeout_s=s.http_timeout_s)}
    worker = DeliveryWorker(engine, s, channels=channels, **kw)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: worker.stats["sleeps"] >= 1, "the worker to go idle")
        yield worker
    finally:
        stop.set()
        worker.wake()
        thread.join(30)


def _queue(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as s:
        return queue_alert(s, rule_id=None, channels=["slack"], message="AAPL crossed 200").id


def _sent(sessions: sessionmaker[Session]) -> bool:
    with sessions() as s:
        return s.scalars(select(AlertDelivery.status)).all() == ["sent"]


def test_alert_queued_in_process_wakes_the_worker(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver
) -> None:
    with running(engine, _settings(receiver)) as worker:
        eid = _queue(sessions)
        wait_until(lambda: _sent(sessions), "delivery without waiting for the poll")
    assert worker.stats["woken_in_process"] == 1
    assert receiver.event_ids() == [str(eid)]


def test_rolled_back_alert_does_not_wake(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver
) -> None:
    with running(engine, _settings(receiver)) as worker:
        with pytest.raises(RuntimeError), transaction(sessions) as s:
            queue_alert(s, rule_id=None, channels=["slack"], message="never committed")
            raise RuntimeError("roll back")
        _queue(sessions)  # the next commit wakes it once, for its own alert only
        wait_until(lambda: _sent(sessions), "the committed alert")
    assert worker.stats["woken_in_process"] == 1
    assert len(receiver.received) == 1


def test_dashboard_only_alert_does_not_wake(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver
) -> None:
    with running(engine, _settings(receiver)) as worker:
        with transaction(sessions) as s:
            queue_alert(s, rule_id=None, channels=["dashboard"], message="only on the page")
        _queue(sessions)
        wait_until(lambda: receiver.received, "the slack alert")
    assert worker.stats["woken_in_process"] == 1


def test_notify_wakes_a_worker_in_another_process(
    pg_server: PostgresServer, receiver: WebhookReceiver
) -> None:
    db_url = new_pg_database(pg_server)
    # Two engines stand for two processes; the in-process wake is off to leave NOTIFY alone.
    trader, deliverer = make_engine(db_url), make_engine(db_url)
    try:
        with running(deliverer, _settings(receiver), in_process_wake=False) as worker:
            wait_until(worker.listening.is_set, "LISTEN")
            _queue(session_factory(trader))
            wait_until(lambda: receiver.received, "delivery woken by NOTIFY")
        assert worker.stats["woken_by_notify"] >= 1
        assert worker.stats["woken_in_process"] == 0
    finally:
        trader.dispose()
        deliverer.dispose()


def test_sqlite_commit_from_another_process_wakes_the_worker(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    db_url = f"sqlite:///{tmp_path / 'falcon.db'}"
    migrate = make_engine(db_url)
    upgrade(migrate)
    migrate.dispose()
    trader, deliverer = make_engine(db_url), make_engine(db_url)
    try:
        s = _settings(receiver, change_poll_s=0.01)
        with running(deliverer, s, in_process_wake=False) as worker:
            _queue(session_factory(trader))
            wait_until(lambda: receiver.received, "delivery woken by the change poll")
        assert worker.stats["woken_by_change"] >= 1
        assert worker.stats["woken_in_process"] == 0
    finally:
        trader.dispose()
        deliverer.dispose()


def test_idle_pass_writes_nothing(engine: Engine, sessions: sessionmaker[Session],
                                  receiver: WebhookReceiver,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The outbox's hot statements go straight to the driver: every statement the driver runs is
    # seen (SQLite's trace callback; psycopg's cursor, which SQLAlchemy goes through as well).
    statements: list[str] = []
    if engine.dialect.name == "sqlite":
        def traced(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.set_trace_callback(statements.append)

        engine.dispose()
        event.listen(engine, "connect", traced)
    else:
        import psycopg

        real = psycopg.Cursor.execute

        def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            statements.append(str(query))
            return real(self, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", execute)

    def writes() -> list[str]:
        return [q for q in statements
                if re.search(r"\b(UPDATE|INSERT|DELETE|BEGIN)\b", q, re.IGNORECASE)]

    worker = DeliveryWorker(engine, _settings(receiver))
    try:
        assert worker.run_once() == 0
        assert statements and writes() == []
        _queue(sessions)
        statements.clear()
        assert worker.run_once() == 1
        # The claim, once there is something to claim.
        assert any("UPDATE alert_deliveries" in q for q in writes())
    finally:
        if engine.dialect.name == "sqlite":
            event.remove(engine, "connect", traced)
        worker.close()


def test_due_channels_counts_and_next_retry(engine: Engine,
                                            sessions: sessionmaker[Session]) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from falcon.db.types import utcnow

    _queue(sessions)
    _queue(sessions)
    later = utcnow() + timedelta(minutes=5)
    with transaction(sessions) as s:
        first = s.scalars(select(AlertDelivery.id).order_by(AlertDelivery.id)).first()
        s.execute(update(AlertDelivery).where(AlertDelivery.id == first)
                  .values(next_attempt_at=later))
    due = due_channels(engine, ["slack", "email"])
    assert due.now == {"slack": 1}
    assert due.next_at == later
