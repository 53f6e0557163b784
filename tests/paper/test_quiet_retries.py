"""Quiet retries: an entry refused bar after bar for one cause is written once, retried always.

The scene: strategy ``hog`` puts all the cash into A; strategy ``stuck`` keeps signalling an
entry into B (its signal is a level: ``close > 50``), which is refused for want of cash at every
open. Each test runs the account with quiet retries and, where it compares, a second account
with them off (every retry written, the behaviour before): same trades, far fewer rows.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.engine import make_engine, session_factory, transaction
from falcon.db.migrate import alembic_config, upgrade
from falcon.db.models import AuditEntry, Event, Fill, Order, PaperAccount
from falcon.domain.market import Bar
from falcon.paper.admin import halt_account, resume_account
from falcon.paper.decisions import DecisionLog, client_order_id
from falcon.paper.trader import Trader

from .helpers import LOOSE, bar, database_url, days, make_account, slot, snapshot

D = days(date(2024, 1, 2), 14)


def _slots(hog_exit: str = "close < 0") -> list[Any]:
    return [
        slot("hog", ["A"], entry="close > 0", exit_=hog_exit,
             sizing={"kind": "fraction", "value": 1.0}),
        slot("stuck", ["B"], entry="close > 50", exit_="close < 0",
             sizing={"kind": "fraction", "value": 0.5}),
    ]


def _trader(sessions: sessionmaker[Session], name: str, *, quiet: bool = True,
            hog_exit: str = "close < 0", log: DecisionLog | None = None) -> Trader:
    return Trader(sessions, account=name, slots=_slots(hog_exit), kind="day", limits=LOOSE,
                  log_sink=log or DecisionLog(None), quiet_retries=quiet)


def _day(i: int, a: float, b: float) -> list[Bar]:
    return [bar("A", D[i], a), bar("B", D[i], b)]


def _orders(sessions: sessionmaker[Session], name: str, ticker: str) -> list[Order]:
    with sessions() as s:
        account = s.scalars(select(PaperAccount).where(PaperAccount.name == name)).one()
        return list(s.scalars(select(Order).where(Order.account_id == account.id,
                                                  Order.ticker == ticker).order_by(Order.id)))


def _audit(sessions: sessionmaker[Session], name: str) -> list[tuple[str, dict[str, Any]]]:
    with sessions() as s:
        return [(a, d) for a, d in s.execute(
            select(AuditEntry.action, AuditEntry.detail)
            .where(AuditEntry.subject.like(f"{name}:%")).order_by(AuditEntry.id))]


def _fills(sessions: sessionmaker[Session], name: str) -> list[tuple[Any, ...]]:
    with sessions() as s:
        account = s.scalars(select(PaperAccount).where(PaperAccount.name == name)).one()
        return list(s.execute(
            select(Fill.ticker, Fill.side, Fill.qty, Fill.price, Fill.fee, Fill.ts)
            .where(Fill.account_id == account.id).order_by(Fill.id)).tuples())


def _streaks(sessions: sessionmaker[Session], name: str) -> list[Any]:
    """The open refusal streaks stored for account ``name`` (entries held while a position is
    open, ``if_flat``, may be stored beside them)."""
    state = _quiet_state(sessions, name)
    return [] if state is None else list(state["streaks"])


def _quiet_state(sessions: sessionmaker[Session], name: str) -> Any:
    with sessions() as s:
        return s.scalars(select(PaperAccount.quiet_state)
                         .where(PaperAccount.name == name)).one()


def _lines(log: io.StringIO, event: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in log.getvalue().splitlines()]
    return [r for r in rows if r["event"] == event]


def test_a_refused_entry_whose_signal_holds_is_written_once_and_summarised(
    sessions: sessionmaker[Session],
) -> None:
    make_account(sessions, "quiet")
    make_account(sessions, "loud")
    out = io.StringIO()
    quiet = _trader(sessions, "quiet", log=DecisionLog(out))
    loud = _trader(sessions, "loud", quiet=False)
    # B signals on D0..D9 (close 100), not on D10 and D11 (close 40); the cash went to A at D1.
    for i in range(12):
        batch = _day(i, 100.0, 100.0 if i < 10 else 40.0)
        quiet.process(batch)
        loud.process(batch)
        if i == 5:  # mid-streak: the held entry is stored with the batch, and has no row
            held = _quiet_state(sessions, "quiet")
            assert held is not None and [s[:4] for s in held["streaks"]] == [
                ["stuck", "B", "buy", "insufficient_cash"]]
            assert held["streaks"][0][8] == client_order_id("quiet", "stuck", "B", D[5], "entry")

    first = client_order_id("quiet", "stuck", "B", D[0], "entry")
    orders = _orders(sessions, "quiet", "B")
    assert [(o.client_order_id, o.status, o.reject_reason) for o in orders] == [
        (first, "rejected", "insufficient_cash")]
    loud_b = _orders(sessions, "loud", "B")
    assert [o.status for o in loud_b] == ["rejected"] * 10  # D1..D10, one a bar
    # The recorded refusal is the very row it was without quiet retries.
    assert (orders[0].qty, orders[0].reason, orders[0].strategy) == (
        loud_b[0].qty, loud_b[0].reason, loud_b[0].strategy)

    b_actions = Counter(a for a, d in _audit(sessions, "quiet") if d.get("ticker") == "B")
    assert b_actions == {"order.decided": 1, "order.rejected": 1, "order.refused_repeatedly": 1}
    summary = [d for a, d in _audit(sessions, "quiet") if a == "order.refused_repeatedly"]
    assert summary == [{
        "account": "quiet", "strategy": "stuck", "ticker": "B", "side": "buy",
        "cause": "insufficient_cash", "first_client_order_id": first, "count": 10,
        "first_ts": D[1].isoformat(), "last_ts": D[10].isoformat()}]
    with sessions() as s:
        assert s.scalar(select(Order.id).where(Order.status == "pending",
                                               Order.client_order_id.like("quiet:%"))) is None
        events = [p for p in s.scalars(select(Event.payload))
                  if p.get("account") == "quiet" and p.get("ticker") == "B"]
        assert len(events) == 1
    assert _streaks(sessions, "quiet") == []  # the streak ended on D11

    assert [r["count"] for r in _lines(out, "entry_refused_repeatedly")] == [10]
    assert len([r for r in _lines(out, "order_rejected") if r["ticker"] == "B"]) == 1
    assert len([r for r in _lines(out, "entry_signal") if r["ticker"] == "B"]) == 1
    assert _fills(sessions, "quiet") == _fills(sessions, "loud")


def test_the_quiet_entry_fills_at_the_bar_it_would_have_filled(
    sessions: sessionmaker[Session],
) -> None:
    make_account(sessions, "quiet")
    make_account(sessions, "loud")
    quiet = _trader(sessions, "quiet", hog_exit="close < 90")
    loud = _trader(sessions, "loud", quiet=False, hog_exit="close < 90")
    # A closes at 80 on D5: hog exits at D6's open, which frees the cash B has waited for.
    for i, a in enumerate([100.0] * 5 + [80.0] * 4):
        quiet.process(_day(i, a, 100.0))
        loud.process(_day(i, a, 100.0))

    got, want = _fills(sessions, "quiet"), _fills(sessions, "loud")
    assert got == want
    assert [(t, side, ts) for t, side, _, _, _, ts in got if t == "B"] == [("B", "buy", D[6])]
    orders = _orders(sessions, "quiet", "B")
    cid = client_order_id("quiet", "stuck", "B", D[5], "entry")
    assert [(o.client_order_id, o.status) for o in orders] == [
        (client_order_id("quiet", "stuck", "B", D[0], "entry"), "rejected"), (cid, "filled")]
    loud_fill = next(o for o in _orders(sessions, "loud", "B") if o.status == "filled")
    columns = ("side", "type", "qty", "time_in_force", "strategy", "reason", "filled_qty",
               "avg_fill_price", "limit_price", "stop_price", "oco_group")
    assert [getattr(orders[1], c) for c in columns] == [getattr(loud_fill, c) for c in columns]
    actions = [(a, d.get("client_order_id")) for a, d in _audit(sessions, "quiet")]
    assert ("order.decided", cid) not in actions  # the held entry had no pending row
    assert ("order.submitted", cid) in actions and ("order.filled", cid) in actions
    summary = [d for a, d in _audit(sessions, "quiet") if a == "order.refused_repeatedly"]
    assert [(d["count"], d["last_ts"]) for d in summary] == [(5, D[5].isoformat())]


def test_a_quiet_entry_with_a_bracket_is_written_before_its_legs(
    sessions: sessionmaker[Session],
) -> None:
    """The held entry's row is stored in the batch it is submitted in, with its stop loss and
    take profit: the legs point at it, and the rows' ids follow the order things were decided
    (a restart rebuilds the book in id order)."""
    make_account(sessions, "quiet")
    slots = [
        slot("hog", ["A"], entry="close > 0", exit_="close < 90",
             sizing={"kind": "fraction", "value": 1.0}),
        slot("stuck", ["B"], entry="close > 50", exit_="close < 0",
             sizing={"kind": "fraction", "value": 0.5},
             stop_loss={"percent": 5}, take_profit={"percent": 10}),
    ]
    quiet = Trader(sessions, account="quiet", slots=slots, kind="day", limits=LOOSE,
                   log_sink=DecisionLog(None))
    for i, a in enumerate([100.0] * 5 + [80.0] * 4):
        quiet.process(_day(i, a, 100.0))

    orders = _orders(sessions, "quiet", "B")
    cid = client_order_id("quiet", "stuck", "B", D[5], "entry")
    entry = next(o for o in orders if o.client_order_id == cid)
    legs = [o for o in orders if o.parent_id == entry.id]
    assert entry.status == "filled"
    assert sorted(o.client_order_id for o in legs) == [f"{cid}:sl", f"{cid}:tp"]
    assert all(o.id > entry.id for o in legs) and all(o.status == "open" for o in legs)
    with sessions() as s:
        account_id = s.scalars(select(PaperAccount.id).where(PaperAccount.name == "quiet")).one()
        ids = list(s.scalars(select(Order.id).where(Order.account_id == account_id)
                             .order_by(Order.created_at, Order.id)))
    assert ids == sorted(ids)
    # A restart finds the bracket as it was left: both legs live in the book.
    again = Trader(sessions, account="quiet", slots=slots, kind="day", limits=LOOSE,
                   log_sink=DecisionLog(None))
    assert sorted(o.id for o in again.state.book.orders_for("B")) == [f"{cid}:sl", f"{cid}:tp"]


def test_another_cause_is_recorded_and_starts_a_new_streak(
    sessions: sessionmaker[Session],
) -> None:
    """A halt from outside (the dashboard) refuses the held entry for another reason: that
    refusal is recorded; back to no cash after the resume: recorded again."""
    make_account(sessions, "quiet")
    quiet = _trader(sessions, "quiet")
    for i in range(4):
        quiet.process(_day(i, 100.0, 100.0))       # refused for cash on D1, D2, D3
    with transaction(sessions) as s:
        halt_account(s, "quiet", reason="drill", actor="test", flatten=False,
                     now=D[3])
    quiet.process(_day(4, 100.0, 100.0))           # halted
    quiet.process(_day(5, 100.0, 100.0))           # halted, quietly
    with transaction(sessions) as s:
        resume_account(s, "quiet", reason="ok", actor="test")
    quiet.process(_day(6, 100.0, 100.0))           # no cash again
    quiet.process(_day(7, 100.0, 100.0))           # no cash, quietly
    quiet.process(_day(8, 100.0, 40.0))            # no cash, quietly; the signal goes away
    quiet.process(_day(9, 100.0, 40.0))            # the streak ends

    assert [(o.client_order_id, o.reject_reason) for o in _orders(sessions, "quiet", "B")] == [
        (client_order_id("quiet", "stuck", "B", D[0], "entry"), "insufficient_cash"),
        (client_order_id("quiet", "stuck", "B", D[3], "entry"), "halted"),
        (client_order_id("quiet", "stuck", "B", D[5], "entry"), "insufficient_cash"),
    ]
    summary = [(d["cause"], d["count"], d["first_ts"], d["last_ts"])
               for a, d in _audit(sessions, "quiet") if a == "order.refused_repeatedly"]
    assert summary == [
        ("insufficient_cash", 3, D[1].isoformat(), D[3].isoformat()),
        ("halted", 2, D[4].isoformat(), D[5].isoformat()),
        ("insufficient_cash", 3, D[6].isoformat(), D[8].isoformat()),
    ]
    # The recorded rows were held entries: inserted as rejected, with the strategy's meta.
    rows = _orders(sessions, "quiet", "B")
    assert json.loads(rows[1].reason or "{}")["purpose"] == "entry"
    assert _streaks(sessions, "quiet") == []


# --- restarts ------------------------------------------------------------------------------------


class _Crash(Exception):
    pass


def _restarted(sessions: sessionmaker[Session], days_seen: list[list[Bar]]) -> Trader:
    """A new trader on the account, as `falcon paper replay` starts one after a kill."""
    t = _trader(sessions, "acct", hog_exit="close < 90")
    last = t.state.last_bar_ts
    t.warm(b for batch in days_seen for b in batch if last is not None and b.ts <= last)
    return t


def _everything(sessions: sessionmaker[Session]) -> dict[str, Any]:
    with sessions() as s:
        account = s.scalars(select(PaperAccount)).one()
        orders = sorted(
            (o.client_order_id, o.status, int(o.qty), int(o.filled_qty), o.reject_reason,
             o.reason)
            for o in s.scalars(select(Order)))
        audit = [(a, sub, d) for a, sub, d in s.execute(
            select(AuditEntry.action, AuditEntry.subject, AuditEntry.detail)
            .order_by(AuditEntry.id))]
        return {"snapshot": snapshot(sessions, account.id), "orders": orders, "audit": audit,
                "quiet_state": account.quiet_state}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_kills_mid_streak_lose_and_duplicate_nothing(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """A restart between batches (after D3) and a kill inside the batch that frees the cash (D6,
    rolled back): the held entry, the streak's count and the fill are those of a run that never
    stopped."""
    batches = [_day(i, a, 100.0 if i < 10 else 40.0)
               for i, a in enumerate([100.0] * 5 + [80.0] * 7)]
    runs = {}
    for name in ("straight", "killed"):
        engine = make_engine(database_url(kind, tmp_path, request, name))
        sessions = session_factory(engine)
        make_account(sessions, "acct")
        t = _trader(sessions, "acct", hog_exit="close < 90")
        for i, batch in enumerate(batches):
            if name == "killed" and i == 4:
                t = _restarted(sessions, batches[:i])  # a clean restart mid-streak
                assert t.state.streaks.held(), "the held entry came back from the database"
            if name == "killed" and i == 6:
                def crash(*_: Any) -> None:
                    raise _Crash  # after release wrote the fill into the batch, before commit
                t._judge_equity = crash  # type: ignore[method-assign]
                with pytest.raises(_Crash):
                    t.process(batch)
                t = _restarted(sessions, batches[:i])  # the process died: a new one
            t.process(batch)
        runs[name] = _everything(sessions)
        engine.dispose()
    assert runs["killed"] == runs["straight"]
    fills = runs["straight"]["snapshot"]["fills"]
    assert any(key.startswith("acct:stuck:B:") and ts == D[6] for key, *_, ts in fills)
    summary = [d for a, _, d in runs["straight"]["audit"] if a == "order.refused_repeatedly"]
    assert [(d["count"], d["last_ts"]) for d in summary] == [(5, D[5].isoformat())]


# --- schema ----------------------------------------------------------------------------------


def test_migration_0005_adds_and_drops_quiet_state_keeping_the_rows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        upgrade(engine, "0004")
        assert "quiet_state" not in {c["name"] for c in inspect(engine).get_columns(
            "paper_accounts")}
        upgrade(engine)
        assert "quiet_state" in {c["name"] for c in inspect(engine).get_columns(
            "paper_accounts")}
        sessions = session_factory(engine)
        make_account(sessions, "m")
        with transaction(sessions) as s:
            s.scalars(select(PaperAccount)).one().quiet_state = {"v": 1, "streaks": []}
        with sessions() as s:
            assert s.scalars(select(PaperAccount.quiet_state)).one() == {"v": 1, "streaks": []}
        command.downgrade(alembic_config(engine), "0004")
        assert "quiet_state" not in {c["name"] for c in inspect(engine).get_columns(
            "paper_accounts")}
        with engine.connect() as conn:  # the accounts' rows (and their ledger) are still there
            assert conn.exec_driver_sql("SELECT count(*) FROM ledger_entries").scalar() == 2
    finally:
        engine.dispose()


def test_nothing_stored_when_nothing_is_quiet(sessions: sessionmaker[Session]) -> None:
    make_account(sessions, "quiet")
    t = _trader(sessions, "quiet")
    t.process([bar("A", D[0], 100.0)])
    t.process([bar("A", D[1], 100.0)])
    assert _streaks(sessions, "quiet") == []
    assert not t.state.streaks and not t.state.streaks.dirty


def test_turning_quiet_retries_off_writes_the_held_entry_when_it_resolves(
    sessions: sessionmaker[Session],
) -> None:
    make_account(sessions, "quiet")
    t = _trader(sessions, "quiet")
    for i in range(4):
        t.process(_day(i, 100.0, 100.0))  # refused on D1, D2 (quietly), D3 (quietly); D3 held
    t = _trader(sessions, "quiet", quiet=False)
    t.warm(b for i in range(4) for b in _day(i, 100.0, 100.0))
    t.process(_day(4, 100.0, 100.0))
    t.process(_day(5, 100.0, 100.0))
    # Every retry written again: D3's held entry refused on D4, D4's on D5; D5's waits.
    assert [(o.client_order_id, o.status) for o in _orders(sessions, "quiet", "B")] == [
        (client_order_id("quiet", "stuck", "B", D[i], "entry"), status)
        for i, status in ((0, "rejected"), (3, "rejected"), (4, "rejected"), (5, "pending"))]
    summary = [d["count"] for a, d in _audit(sessions, "quiet") if a == "order.refused_repeatedly"]
    assert summary == [3]  # D1..D3, ended by the first refusal written again
    assert _streaks(sessions, "quiet") == []


@pytest.mark.parametrize("broken", [
    {"v": 1, "streaks": [["not", "a", "streak"]]},
    {"v": 1, "streaks": [], "if_flat": [["cid", "B", "sideways", {}]]},
    ["not", "a", "document"],
])
def test_an_unreadable_quiet_state_is_dropped_with_a_trace_and_trading_goes_on(
    sessions: sessionmaker[Session], broken: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    make_account(sessions, "quiet")
    quiet = _trader(sessions, "quiet")
    for i in range(3):
        quiet.process(_day(i, 100.0, 100.0))
    assert _streaks(sessions, "quiet")  # B's entry is being retried quietly
    with transaction(sessions) as s:
        account = s.scalars(select(PaperAccount).where(PaperAccount.name == "quiet")).one()
        account.quiet_state = broken

    again = _trader(sessions, "quiet")  # starts: a broken retry store must not stop trading
    assert not again.state.streaks.open and not again.state.streaks.if_flat
    assert "quiet_state cannot be read" in caplog.text and "sideways" not in caplog.text
    assert [a for a, _ in _audit_all(sessions) if a == "paper.quiet_state_dropped"] == [
        "paper.quiet_state_dropped"]
    again.process(_day(3, 100.0, 100.0))  # the next batch stores a clean state
    stored = _quiet_state(sessions, "quiet")
    assert stored["streaks"] == [] and [e[1] for e in stored["if_flat"]] == ["A"]  # hog's
    again.process(_day(4, 100.0, 100.0))  # B's entry, decided again, refused: a new streak
    assert _trader(sessions, "quiet").state.streaks.open


def _audit_all(sessions: sessionmaker[Session]) -> list[tuple[str, dict[str, Any]]]:
    with sessions() as s:
        return [(a, d) for a, d in s.execute(
            select(AuditEntry.action, AuditEntry.detail).order_by(AuditEntry.id))]
