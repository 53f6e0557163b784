"""On PostgreSQL, live streams wake on NOTIFY from any writer; on SQLite they poll."""

from __future__ import annotations

import threading

from sqlalchemy import Engine

from falcon.db.engine import session_factory
from falcon.db.models import Event
from falcon.web.live import NotifyWaiter, PollingWaiter, waiter_for


def test_an_insert_from_another_connection_wakes_the_stream(engine: Engine) -> None:
    waiter = waiter_for(engine)
    if engine.dialect.name != "postgresql":
        assert isinstance(waiter, PollingWaiter)
        return
    assert isinstance(waiter, NotifyWaiter)
    woken: list[bool] = []
    listening = threading.Thread(target=lambda: woken.append(waiter.wait(60.0)))
    listening.start()
    try:
        with session_factory(engine).begin() as s:  # the trigger NOTIFYs at commit
            s.add(Event(kind="fill", payload={"ticker": "AAPL"}))
        listening.join(90)
        # True only when a notification arrived; a timeout would return False.
        assert woken == [True]
    finally:
        waiter.close()
