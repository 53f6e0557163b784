"""prune_events: housekeeping deletes old live-update events, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.config import load_settings
from falcon.db.engine import make_engine, session_factory
from falcon.db.migrate import upgrade
from falcon.db.models import Event
from falcon.db.types import utcnow
from falcon.web import live
from falcon.web.live import prune_events

NOW = utcnow()


def _seed(sessions: sessionmaker[Session], ages_days: list[float]) -> None:
    with sessions.begin() as s:
        for n, age in enumerate(ages_days):
            s.add(Event(kind="fill", ts=NOW - timedelta(days=age), payload={"n": n}))


def test_prune_events_keeps_the_retention_window(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    sessions = session_factory(engine)
    try:
        # Older than 7 days: 0..4 (five rows, so that small batches have to loop); newer: 5..7.
        _seed(sessions, [30, 20, 10, 8, 7.01, 6.9, 1, 0])
        monkeypatch.setattr(live, "PRUNE_BATCH", 2)
        retention = timedelta(days=load_settings({}, environ={}).web.events_retention_days)
        assert retention == timedelta(days=7)
        assert prune_events(engine, retention) == 5
        with sessions() as s:
            left = [e.payload["n"] for e in s.scalars(select(Event).order_by(Event.id))]
        assert left == [5, 6, 7]
        assert prune_events(engine, retention) == 0  # idempotent

        # Through a session: joins its transaction, the caller commits (or not).
        with sessions() as s:
            assert prune_events(s, datetime.now(UTC) - timedelta(hours=12)) == 2
            s.rollback()
        with sessions.begin() as s:
            assert prune_events(s, timedelta(hours=12)) == 2
        with sessions() as s:
            assert [e.payload["n"] for e in s.scalars(select(Event))] == [7]
    finally:
        engine.dispose()


def test_prune_events_refuses_nonsense_cutoffs() -> None:
    engine = make_engine("sqlite://")
    with pytest.raises(ValueError, match="positive"):
        prune_events(engine, timedelta(0))
    with pytest.raises(ValueError, match="aware"):
        prune_events(engine, datetime(2026, 1, 1))  # naive: refused
    engine.dispose()
