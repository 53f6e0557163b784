"""What LISTENers hear when alerts are queued on PostgreSQL: the dashboard and the delivery worker.

The dashboard (``falcon/web/live.py``) LISTENs on ``falcon_events``, which the ``events_notify``
trigger (migration 0002) signals for every ``events`` row, alert rows included; the delivery
worker LISTENs on ``falcon_alerts``, which only the outbox's statement signals. Each committed
write must reach each listener that has something to do, exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, func, select

from falcon.alerts.outbox import ALERTS_CHANNEL, EVENTS_CHANNEL, AlertWriter, NewAlert, queue_alert
from falcon.db.engine import make_engine, session_factory, transaction
from falcon.db.models import Event
from falcon.web.live import NotifyWaiter, waiter_for

from ..conftest import new_pg_database
from ..pgserver import PostgresServer

SENTINEL = "test-sentinel"


def _conninfo(engine: Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def pg_engine(pg_server: PostgresServer) -> Iterator[Engine]:
    engine = make_engine(new_pg_database(pg_server))
    yield engine
    engine.dispose()


class Listener:
    """LISTEN on both channels on a connection of its own, as the dashboard and worker do."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn = psycopg.connect(_conninfo(engine), autocommit=True)
        self._conn.execute(f"LISTEN {EVENTS_CHANNEL}")
        self._conn.execute(f"LISTEN {ALERTS_CHANNEL}")

    def heard(self) -> list[tuple[str, str]]:
        """``(channel, payload)`` of every notification committed so far, in order.

        A sentinel NOTIFY is committed after the writes under test; notifications reach a
        listener in commit order, so once it arrives everything before it has too, and a
        second copy of any could not still be on its way.
        """
        with psycopg.connect(_conninfo(self._engine), autocommit=True) as other:
            other.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, SENTINEL))
        out: list[tuple[str, str]] = []
        for note in self._conn.notifies(timeout=30):
            if note.payload == SENTINEL:
                return out
            out.append((note.channel, note.payload))
        raise AssertionError(f"the sentinel never came; heard {out}")

    def close(self) -> None:
        self._conn.close()


@pytest.fixture
def listener(pg_engine: Engine) -> Iterator[Listener]:
    heard = Listener(pg_engine)
    yield heard
    heard.close()


def _queue(engine: Engine, channels: list[str]) -> int:
    with transaction(session_factory(engine)) as s:
        return queue_alert(s, rule_id=None, channels=channels, message="AAPL crossed 200").id


def _alert_rows(engine: Engine) -> int:
    with session_factory(engine)() as s:
        return int(s.scalar(select(func.count()).where(Event.kind == "alert")) or 0)


def test_a_dashboard_alert_notifies_the_dashboard_once(pg_engine: Engine,
                                                       listener: Listener) -> None:
    _queue(pg_engine, ["dashboard"])
    assert listener.heard() == [(EVENTS_CHANNEL, "alert")]  # nothing for the delivery worker
    assert _alert_rows(pg_engine) == 1


def test_a_dashboard_and_slack_alert_notifies_each_listener_once(pg_engine: Engine,
                                                                 listener: Listener) -> None:
    eid = _queue(pg_engine, ["dashboard", "slack"])
    assert sorted(listener.heard()) == [(ALERTS_CHANNEL, str(eid)), (EVENTS_CHANNEL, "alert")]


def test_a_remote_only_alert_does_not_notify_the_dashboard(pg_engine: Engine,
                                                           listener: Listener) -> None:
    eid = _queue(pg_engine, ["slack", "email"])
    assert listener.heard() == [(ALERTS_CHANNEL, str(eid))]
    assert _alert_rows(pg_engine) == 0


def test_a_rolled_back_alert_notifies_nobody(pg_engine: Engine, listener: Listener) -> None:
    with session_factory(pg_engine)() as s, s.begin():
        queue_alert(s, rule_id=None, channels=["dashboard", "slack"], message="never")
        s.rollback()
    assert listener.heard() == []


def test_the_alert_writers_batch_notifies_each_listener_once(pg_engine: Engine,
                                                             listener: Listener) -> None:
    # The alert engine's hot path: one statement, in autocommit, for a whole batch of alerts.
    writer = AlertWriter(pg_engine)
    try:
        alerts = [NewAlert(None, ["dashboard", "slack"], f"alert {i}", "AAPL") for i in range(3)]
        ids = writer.write((), alerts).ids
        writer.write((), [NewAlert(None, ["dashboard"], "page only", "MSFT")])
    finally:
        writer.close()
    assert listener.heard() == [(ALERTS_CHANNEL, str(max(i or 0 for i in ids))),
                                (EVENTS_CHANNEL, "alert"),  # one for the three rows
                                (EVENTS_CHANNEL, "alert")]  # the second write's
    assert _alert_rows(pg_engine) == 4


def test_the_live_stream_wakes_for_a_queued_dashboard_alert(pg_engine: Engine) -> None:
    # The dashboard's own waiter (falcon.web.live), not just any LISTEN.
    waiter = waiter_for(pg_engine)
    assert isinstance(waiter, NotifyWaiter)
    woken: list[Any] = []
    waiting = threading.Thread(target=lambda: woken.append(waiter.wait(60.0)))
    waiting.start()
    try:
        _queue(pg_engine, ["dashboard"])
        waiting.join(90)
        assert woken == [True]  # a timeout would give False
    finally:
        waiter.close()
