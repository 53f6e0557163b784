"""A batch of bars queues all of its alerts in one transaction, and says where its time went."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from falcon.alerts import AlertEngine, add_rule
from falcon.alerts.outbox import NewAlert, queue_alerts
from falcon.db.engine import transaction
from falcon.db.models import AlertDelivery, AlertEvent, AlertRule, Event
from falcon.domain.market import Bar

OPEN = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)  # Tuesday, 10:00 New York


def bar(ticker: str, close: float, minute: int) -> Bar:
    return Bar(ticker=ticker, ts=OPEN + timedelta(minutes=minute), open=close, high=close,
               low=close, close=close, volume=100.0)


def rule(sessions: sessionmaker[Session], kind: str, cooldown: Any = 0, **params: Any) -> int:
    with transaction(sessions) as s:
        return add_rule(s, kind=kind, params=params, channels=["slack", "dashboard"],
                        cooldown=cooldown).id


def count(sessions: sessionmaker[Session], model: Any) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_one_transaction_for_a_batch_of_alerts(engine: Engine,
                                               sessions: sessionmaker[Session]) -> None:
    tickers = ["AAA", "BBB", "CCC", "DDD"]
    for t in tickers:
        rule(sessions, "price_cross", ticker=t, above=100)
    rule(sessions, "pct_move", ticker="AAA", pct=5, bars=1)
    alerts = AlertEngine(engine, auto_reload=False)
    assert alerts.on_bars([bar(t, 99, 0) for t in tickers]) == []
    fired = alerts.on_bars([bar(t, 110, 1) for t in tickers])
    if engine.dialect.name == "postgresql":
        # Every row the batch wrote, rules' cooldown stamps included, has one creating xact.
        with engine.connect() as conn:
            xacts = conn.scalar(text(
                "SELECT count(DISTINCT x) FROM (SELECT xmin::text AS x FROM alert_events "
                "UNION ALL SELECT xmin::text FROM alert_deliveries "
                "UNION ALL SELECT xmin::text FROM events "
                "UNION ALL SELECT xmin::text FROM alert_rules "
                "WHERE last_fired_at IS NOT NULL) AS t"))
        assert xacts == 1
    assert sorted((f.ticker, "moved" in f.message) for f in fired) == [
        ("AAA", False), ("AAA", True), ("BBB", False), ("CCC", False), ("DDD", False)]
    # Ids come back in the order the alerts were queued, each with its own rows.
    with sessions() as s:
        for f in fired:
            ev = s.get(AlertEvent, f.event_id)
            assert ev is not None and ev.message == f.message and ev.rule_id == f.rule_id
            assert ev.latency_ms == f.latency_ms and f.latency_ms >= 0
            chans = s.execute(select(AlertDelivery.channel, AlertDelivery.status)
                              .where(AlertDelivery.event_id == f.event_id)).all()
            assert sorted(chans) == [("dashboard", "sent"), ("slack", "pending")]
        live = s.scalars(select(Event.payload).where(Event.kind == "alert")).all()
        assert sorted(p["event_id"] for p in live) == sorted(f.event_id for f in fired)


_FAIL_ON_DDD = {
    "sqlite": ["CREATE TRIGGER fail_ddd BEFORE INSERT ON alert_events WHEN NEW.ticker = 'DDD' "
               "BEGIN SELECT RAISE(ABORT, 'no DDD'); END"],
    "postgresql": [
        "CREATE FUNCTION fail_ddd() RETURNS trigger AS $$ BEGIN IF NEW.ticker = 'DDD' THEN "
        "RAISE EXCEPTION 'no DDD'; END IF; RETURN NEW; END; $$ LANGUAGE plpgsql",
        "CREATE TRIGGER fail_ddd BEFORE INSERT ON alert_events FOR EACH ROW "
        "EXECUTE FUNCTION fail_ddd()"],
}


def test_a_batch_is_queued_all_or_nothing(engine: Engine,
                                          sessions: sessionmaker[Session]) -> None:
    tickers = ["AAA", "BBB", "CCC", "DDD"]
    for t in tickers:
        rule(sessions, "price_cross", cooldown="1h", ticker=t, above=100)
    alerts = AlertEngine(engine, auto_reload=False)
    alerts.on_bars([bar(t, 99, 0) for t in tickers])
    with engine.begin() as conn:
        for sql in _FAIL_ON_DDD[engine.dialect.name]:
            conn.execute(text(sql))
    # DDD's alert, the last of the batch, cannot be written: none of the batch is.
    with pytest.raises(Exception, match="no DDD"):
        alerts.on_bars([bar(t, 110, 1) for t in tickers])
    assert count(sessions, AlertEvent) == count(sessions, AlertDelivery) == 0
    assert count(sessions, Event) == 0
    with sessions() as s:
        assert s.scalars(select(AlertRule.last_fired_at)).all() == [None] * 4
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER fail_ddd" + (
            " ON alert_events" if engine.dialect.name == "postgresql" else "")))
    # No cooldown was taken, in the database or in memory: the next crosses fire.
    alerts.on_bars([bar(t, 99, 2) for t in tickers])
    fired = alerts.on_bars([bar(t, 110, 3) for t in tickers])
    assert sorted(f.ticker or "" for f in fired) == tickers
    assert count(sessions, AlertEvent) == 4


def test_cooldown_inside_one_batch(engine: Engine, sessions: sessionmaker[Session]) -> None:
    rule(sessions, "price_cross", cooldown="10m", ticker="AAA", above=100)
    rule(sessions, "price_cross", cooldown=0, ticker="BBB", above=100)
    alerts = AlertEngine(engine, auto_reload=False)
    # Two crosses of each ticker in one batch, two minutes apart.
    batch = [bar(t, c, m) for m, c in enumerate([99, 101, 99, 101]) for t in ("AAA", "BBB")]
    fired = alerts.on_bars(batch)
    assert sorted(f.ticker or "" for f in fired) == ["AAA", "BBB", "BBB"]
    with sessions() as s:
        stamps = dict(s.execute(select(AlertRule.name, AlertRule.last_fired_at)).all())
    assert stamps == {"AAA crosses above 100": OPEN + timedelta(minutes=1),
                      "BBB crosses above 100": OPEN + timedelta(minutes=3)}
    # The stamp in memory matches: the next cross of AAA within 10 minutes is refused.
    assert alerts.on_bars([bar("AAA", 99, 4), bar("AAA", 101, 5)]) == []


def test_a_rule_taken_by_another_engine_is_left_out_of_the_batch(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    rule(sessions, "price_cross", cooldown="1h", ticker="AAA", above=100)
    rule(sessions, "price_cross", cooldown="1h", ticker="BBB", above=100)
    a, b = AlertEngine(engine, auto_reload=False), AlertEngine(engine, auto_reload=False)
    for e in (a, b):
        e.on_bars([bar("AAA", 99, 0), bar("BBB", 99, 0)])
    assert [f.ticker for f in a.on_bars([bar("AAA", 101, 1)])] == ["AAA"]
    # b sees both cross; only BBB is still free.
    assert [f.ticker for f in b.on_bars([bar("AAA", 101, 1), bar("BBB", 101, 1)])] == ["BBB"]
    assert count(sessions, AlertEvent) == 2


def test_queue_alerts_many_at_once(engine: Engine, sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        ids = queue_alerts(s, [NewAlert(None, ["slack", "email", "slack"], f"m{i}", "AAA", 1.5)
                               for i in range(30)])
    assert len(ids) == 30 and ids == sorted(ids)
    with sessions() as s:
        msgs = dict(s.execute(select(AlertEvent.id, AlertEvent.message)).all())
    assert [msgs[i] for i in ids] == [f"m{i}" for i in range(30)]
    assert count(sessions, AlertDelivery) == 60  # a channel named twice is sent once
    assert count(sessions, Event) == 0


def test_timing_tells_indicators_apart(engine: Engine, sessions: sessionmaker[Session]) -> None:
    rule(sessions, "price_cross", ticker="AAA", above=100)
    alerts = AlertEngine(engine, auto_reload=False)
    alerts.on_bars([bar("AAA", 99, 0)])
    assert alerts.timing.indicator_ms == 0.0 and alerts.timing.scan_ms > 0
    alerts.on_bars([bar("AAA", 101, 1)])
    assert alerts.timing.queue_ms > 0
    rule(sessions, "indicator", ticker="AAA", condition="close > sma(close, 2)")
    alerts.reload_rules()
    alerts.on_bars([bar("AAA", 102, 2)])
    assert alerts.timing.indicator_ms > 0 and alerts.timing.indicator_queries == 1
    assert alerts.timing.queue_ms == 0.0  # nothing fired on this call


def test_queue_alerts_beyond_one_statement(engine: Engine,
                                           sessions: sessionmaker[Session]) -> None:
    # More rows than one statement could carry in bind parameters (65,535 on PostgreSQL).
    with transaction(sessions) as s:
        ids = queue_alerts(s, [NewAlert(None, ["slack", "dashboard"], f"m{i}", "AAA")
                               for i in range(2600)])
    assert len(set(ids)) == 2600
    assert count(sessions, AlertEvent) == 2600
    assert count(sessions, AlertDelivery) == 5200
    assert count(sessions, Event) == 2600
