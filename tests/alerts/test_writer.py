"""The connection the alert engine queues on: kept, replaced when broken, checkpointed aside."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from falcon.alerts import AlertEngine, add_rule, outbox
from falcon.alerts.channels import WebhookChannel
from falcon.alerts.delivery import DeliveryWorker
from falcon.alerts.outbox import queue_alert
from falcon.alerts.settings import AlertSettings
from falcon.db.engine import transaction
from falcon.db.models import AlertDelivery, AlertEvent
from falcon.domain.market import Bar

from ..jobs.procs import wait_until
from .servers import WebhookReceiver

OPEN = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)  # Tuesday, 10:00 New York


def bar(ticker: str, close: float, minute: int) -> Bar:
    return Bar(ticker=ticker, ts=OPEN + timedelta(minutes=minute), open=close, high=close,
               low=close, close=close, volume=100.0)


def cross_rule(sessions: sessionmaker[Session], ticker: str = "AAA") -> int:
    with transaction(sessions) as s:
        return add_rule(s, kind="price_cross", params={"ticker": ticker, "above": 100},
                        channels=["dashboard", "slack"], cooldown=0).id


def events(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(AlertEvent)) or 0)


def test_alerts_after_close_and_after_the_server_dropped_the_connection(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver
) -> None:
    cross_rule(sessions)
    alerts = AlertEngine(engine, auto_reload=False)
    s = AlertSettings(slack_webhook_url=receiver.url())
    worker = DeliveryWorker(engine, s, channels={"slack": WebhookChannel(
        "slack", s.slack_webhook_url, key="text", timeout_s=5.0)})
    minute = iter(range(100))

    def cross() -> int:
        alerts.on_bar(bar("AAA", 99, next(minute)))
        return len(alerts.on_bar(bar("AAA", 101, next(minute))))

    assert cross() == 1
    assert worker.run_once() == 1
    alerts.close()  # the connection goes back to the pool; the next alert takes one again
    assert cross() == 1
    if engine.dialect.name == "postgresql":
        # A server restart, an idle timeout: every connection of the database is cut, the
        # engine's and the worker's kept ones included.
        with engine.connect() as conn:
            killed = conn.scalar(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        assert killed and killed >= 2
    assert cross() == 1  # replaced, and queued once
    assert worker.run_once() == 2
    worker.close()
    assert events(sessions) == 3
    assert len(receiver.received) == 3
    alerts.close()


def test_sqlite_wal_is_checkpointed_in_the_background(
    engine: Engine, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's WAL")
    from falcon.db import engine as db_engine

    database = str(Path(str(engine.url.database)).resolve())
    ran: list[str] = []
    real = db_engine._Checkpointer.checkpoint

    def checkpoint(path: str) -> None:
        real(path)
        if path == database:
            ran.append(threading.current_thread().name)

    monkeypatch.setattr(db_engine._Checkpointer, "checkpoint", staticmethod(checkpoint))
    cross_rule(sessions)
    alerts = AlertEngine(engine, auto_reload=False)
    with outbox.write_lock(engine):  # the kept connection never checkpoints in its commits
        kept = outbox._sqlite_connection(engine).get()
        assert kept.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    ran.clear()
    alerts.on_bar(bar("AAA", 99, 0))
    assert alerts.on_bar(bar("AAA", 101, 1))  # committed on the driver's connection
    # The process's checkpointer heard of it and ran one aside, in its own thread.
    wait_until(lambda: ran, "the background checkpoint")
    assert ran[0] != threading.current_thread().name
    with engine.connect() as conn:
        _busy, frames, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    assert frames == done
    alerts.close()


def test_woken_worker_lets_a_burst_gather_into_one_claim(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    claims: list[int] = []
    real_claim = outbox.claim_due

    def counting(*args: Any, **kwargs: Any) -> list[outbox.Claimed]:
        got = real_claim(*args, **kwargs)
        if got:
            claims.append(len(got))
        return got

    monkeypatch.setattr(outbox, "claim_due", counting)
    s = AlertSettings(slack_webhook_url=receiver.url(), poll_interval_s=3600.0,
                      change_poll_s=3600.0, gather_s=0.5)
    channels: dict[str, Any] = {"slack": WebhookChannel("slack", s.slack_webhook_url,
                                                        key="text", timeout_s=5.0)}
    worker = DeliveryWorker(engine, s, channels=channels)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: worker.stats["sleeps"] >= 1, "the worker to go idle")
        for i in range(5):  # five commits, each waking the worker
            with transaction(sessions) as session:
                queue_alert(session, rule_id=None, channels=["slack"], message=f"m{i}")
        wait_until(lambda: len(receiver.received) == 5, "the five alerts")
    finally:
        stop.set()
        worker.wake()
        thread.join(30)
    assert claims == [5]
    with sessions() as session:
        assert set(session.scalars(select(AlertDelivery.status))) == {"sent"}
