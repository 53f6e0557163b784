"""The outbox: alerts and their deliveries as rows, so that no alert is lost across a restart.

:func:`queue_alerts` (:func:`queue_alert` for one) writes each
:class:`~falcon.db.models.AlertEvent` and one :class:`~falcon.db.models.AlertDelivery` per channel
in the caller's transaction, a few bulk statements for any number of alerts: either an alert and
all of its deliveries exist, or none do. After the commit, delivery workers in the same process
are woken (:func:`add_waiter`); others hear a NOTIFY (PostgreSQL) or see the commit (SQLite).

The dashboard channel is a row in the same database, so it is delivered right there (an ``Event``
of kind ``alert`` for the live pages) and its delivery row is born ``sent``; the other channels
start ``pending`` and wait for the delivery worker.

Life of a delivery::

    pending --claim (attempts+1, leased until now+lease)--> sending
       ^            |--ok--> sent
       |            |--error, attempts left--> pending (next_attempt_at = now + backoff)
       |            |--error, last attempt or permanent--> dead (last_error kept)
       +--lease expires (the worker died mid-send)--+

A claim is one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` on PostgreSQL, so
workers skip each other's rows; SQLite ignores ``FOR UPDATE`` but runs the whole statement under its
single write lock, which is just as exclusive. Delivery is at least once: a worker killed after the
receiver got the message but before ``sent`` was written sends it again when the lease expires, with
the same event id (the idempotency hint every channel carries).

Times are the Python clock of whichever node writes them; a few seconds of skew between nodes only
shifts a retry by as much.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, event, func, insert, select, update
from sqlalchemy.orm import Session

from falcon.db.models import AlertDelivery, AlertEvent, Event
from falcon.db.types import utcnow

__all__ = [
    "ALERTS_CHANNEL",
    "EVENTS_CHANNEL",
    "Claimed",
    "Due",
    "NewAlert",
    "add_waiter",
    "claim_due",
    "due_channels",
    "mark_failed",
    "mark_sent",
    "queue_alert",
    "queue_alerts",
    "release",
    "remove_waiter",
    "write_lock",
]

#: NOTIFY channel the delivery worker LISTENs on (PostgreSQL): a new alert wakes it at once.
ALERTS_CHANNEL = "falcon_alerts"
#: NOTIFY channel of the live dashboard pages (the same one the screener signals).
EVENTS_CHANNEL = "falcon_events"


def _is_pg(bind: Session | Engine) -> bool:
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return engine.dialect.name == "postgresql"


@dataclass(frozen=True)
class NewAlert:
    """One alert to queue with :func:`queue_alerts`."""

    rule_id: int | None
    channels: Sequence[str]
    message: str
    ticker: str | None = None
    latency_ms: float | None = None
    test: bool = False


def queue_alerts(session: Session, alerts: Sequence[NewAlert]) -> list[int]:
    """Insert alerts and their deliveries in ``session``'s transaction; their event ids in order.

    A handful of bulk statements whatever the number of alerts (one multi-row ``INSERT ...
    RETURNING`` for the events, one each for deliveries and live-page events, at most one NOTIFY
    per channel), rather than an ORM flush per alert: the alert engine queues a whole batch of
    bars' alerts in one transaction and every statement inside it holds SQLite's write lock.
    The caller commits; in-process delivery workers are woken right after that commit.
    """
    if not alerts:
        return []
    now = utcnow()
    conn = session.connection()  # Core: the ORM's bulk path costs more than the statements
    ids: list[int] = list(conn.scalars(
        insert(AlertEvent).returning(AlertEvent.id, sort_by_parameter_order=True),
        [{"rule_id": a.rule_id, "ticker": a.ticker, "message": a.message,
          "latency_ms": a.latency_ms, "created_at": now} for a in alerts],
    ))
    deliveries: list[dict[str, Any]] = []
    live: list[dict[str, Any]] = []
    remote = False
    for event_id, a in zip(ids, alerts, strict=True):
        for channel in dict.fromkeys(a.channels):
            if channel == "dashboard":
                live.append({"kind": "alert", "ts": now, "payload": {
                    "event_id": event_id, "rule_id": a.rule_id, "ticker": a.ticker,
                    "message": a.message, "latency_ms": a.latency_ms,
                    "created_at": now.isoformat(), "test": a.test}})
                deliveries.append({"event_id": event_id, "channel": channel, "status": "sent",
                                   "attempts": 1, "next_attempt_at": now, "delivered_at": now})
            else:
                remote = True
                deliveries.append({"event_id": event_id, "channel": channel,
                                   "status": "pending", "attempts": 0, "next_attempt_at": now,
                                   "delivered_at": None})
    # executemany: psycopg pipelines it, SQLite loops in C; a multi-row VALUES statement (or a
    # CTE carrying them) measured slower here, its compilation costing more than the trips.
    if deliveries:
        conn.execute(insert(AlertDelivery), deliveries)
    if live:
        conn.execute(insert(Event), live)
    if conn.dialect.name == "postgresql" and (remote or live):
        # NOTIFY is transactional: the worker and live pages hear it only once this commits.
        # One per batch, both in one round trip: a listener only needs to know to look.
        notes = []
        if remote:
            notes.append(func.pg_notify(ALERTS_CHANNEL, str(ids[-1])))
        if live:
            notes.append(func.pg_notify(EVENTS_CHANNEL, "alert"))
        conn.execute(select(*notes))
    if remote:
        _wake_after_commit(session)
    return ids


def queue_alert(
    session: Session,
    *,
    rule_id: int | None,
    channels: Sequence[str],
    message: str,
    ticker: str | None = None,
    latency_ms: float | None = None,
    test: bool = False,
) -> AlertEvent:
    """Insert one alert and its deliveries (see :func:`queue_alerts`); the caller commits."""
    [event_id] = queue_alerts(session, [NewAlert(rule_id, channels, message, ticker,
                                                 latency_ms, test)])
    event = session.get(AlertEvent, event_id)
    if event is None:  # pragma: no cover - just inserted in this transaction
        raise LookupError(f"alert event {event_id} vanished")
    return event


# --- waking delivery workers in this process --------------------------------------------------

_WAKE_KEY = "falcon_alerts_wake"
_waiters: dict[str, list[Callable[[], None]]] = {}
_waiters_lock = threading.Lock()
_listening = False


def _db_key(bind: Engine | Connection) -> str:
    # By URL, not engine object: `falcon up` may reach one database through two engines.
    return bind.engine.url.render_as_string(hide_password=True)


def add_waiter(engine: Engine, callback: Callable[[], None]) -> None:
    """Call ``callback`` after every commit in this process that queued a remote delivery.

    This is how a delivery worker in the same process as the alert engine (``falcon up``, the
    benchmark) hears of a new alert at once, on SQLite too; other processes hear of it through
    PostgreSQL NOTIFY or the SQLite change poll (:class:`~falcon.alerts.delivery.DeliveryWorker`).
    """
    global _listening
    with _waiters_lock:
        if not _listening:
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_rollback", _after_rollback)
            _listening = True
        _waiters.setdefault(_db_key(engine), []).append(callback)


def remove_waiter(engine: Engine, callback: Callable[[], None]) -> None:
    """Undo :func:`add_waiter`."""
    with _waiters_lock:
        found = _waiters.get(_db_key(engine), [])
        if callback in found:
            found.remove(callback)


_write_locks: dict[str, threading.Lock] = {}


def write_lock(engine: Engine) -> AbstractContextManager[Any]:
    """Hold around a write transaction of the alert engine or the delivery worker.

    On SQLite, writers in one process queue on this lock instead of on the database's: SQLite's
    busy handler retries after sleeping 1, 2, 5, 10 ... ms, so an alert that meets the worker's
    claim would wait several milliseconds for a lock freed in a fraction of one. Writers in other
    processes still meet the busy handler. PostgreSQL locks rows, not the database: no lock.
    """
    if engine.dialect.name != "sqlite":
        return nullcontext()
    key = _db_key(engine)
    with _waiters_lock:
        lock = _write_locks.get(key)
        if lock is None:
            lock = _write_locks[key] = threading.Lock()
    return lock


def _wake_after_commit(session: Session) -> None:
    session.info[_WAKE_KEY] = session.get_bind()


def _after_commit(session: Session) -> None:
    bind = session.info.pop(_WAKE_KEY, None)
    if bind is None:
        return
    with _waiters_lock:
        callbacks = list(_waiters.get(_db_key(bind), ()))
    for callback in callbacks:
        callback()


def _after_rollback(session: Session) -> None:
    session.info.pop(_WAKE_KEY, None)


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds until ``lease_until``; ``attempt`` counts this try."""

    id: int
    event_id: int
    channel: str
    attempt: int
    rule_id: int | None
    ticker: str | None
    message: str
    created_at: datetime


@dataclass(frozen=True)
class Due:
    """What :func:`due_channels` found: rows due now per channel, and the next time one is due."""

    now: dict[str, int]
    next_at: datetime | None


def due_channels(engine: Engine, channels: Collection[str], *, now: datetime | None = None) -> Due:
    """Count pending deliveries due now per channel, and when the next later one falls due.

    A read (one index range on ``status, next_attempt_at``): the worker asks this before it
    claims, so an idle or woken-for-nothing pass never takes SQLite's write lock, and it knows
    how long it may sleep before a retry or an expired lease needs it.
    """
    now = now or utcnow()
    if not channels:
        return Due({}, None)
    pending = (AlertDelivery.status == "pending", AlertDelivery.channel.in_(list(channels)))
    with engine.connect() as conn:
        counts = conn.execute(
            select(AlertDelivery.channel, func.count())
            .where(*pending, AlertDelivery.next_attempt_at <= now)
            .group_by(AlertDelivery.channel)
        ).all()
        later = conn.execute(
            select(func.min(AlertDelivery.next_attempt_at))
            .where(*pending, AlertDelivery.next_attempt_at > now)
        ).scalar()
    if later is not None and later.tzinfo is None:  # min() loses the column type on SQLite
        later = later.replace(tzinfo=UTC)
    return Due({c: int(n) for c, n in counts}, later)


def claim_due(
    engine: Engine,
    *,
    channels: Collection[str],
    limit: int,
    lease_s: float,
    now: datetime | None = None,
    event_id: int | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` due pending deliveries of ``channels`` (oldest first)."""
    if not channels or limit <= 0:
        return []
    now = now or utcnow()
    due = (
        select(AlertDelivery.id)
        .where(
            AlertDelivery.status == "pending",
            AlertDelivery.next_attempt_at <= now,
            AlertDelivery.channel.in_(list(channels)),
        )
        .order_by(AlertDelivery.next_attempt_at, AlertDelivery.id)
        .limit(limit)
    )
    if event_id is not None:
        due = due.where(AlertDelivery.event_id == event_id)
    if _is_pg(engine):
        due = due.with_for_update(skip_locked=True)
    stmt = (
        update(AlertDelivery)
        .where(AlertDelivery.id.in_(due.scalar_subquery()), AlertDelivery.status == "pending")
        .values(attempts=AlertDelivery.attempts + 1,
                next_attempt_at=now + timedelta(seconds=lease_s))
        .returning(AlertDelivery.id, AlertDelivery.event_id, AlertDelivery.channel,
                   AlertDelivery.attempts)
    )
    with write_lock(engine), engine.begin() as conn:
        rows = conn.execute(stmt).all()
        if not rows:
            return []
        events = {
            e.id: e
            for e in conn.execute(
                select(AlertEvent.id, AlertEvent.rule_id, AlertEvent.ticker, AlertEvent.message,
                       AlertEvent.created_at)
                .where(AlertEvent.id.in_({r.event_id for r in rows}))
            )
        }
    out = []
    for r in sorted(rows, key=lambda r: r.id):
        e = events[r.event_id]
        created = e.created_at
        out.append(Claimed(r.id, r.event_id, r.channel, r.attempts, e.rule_id, e.ticker,
                           e.message, created))
    return out


def mark_sent(engine: Engine, claimed: Claimed | Sequence[Claimed]) -> int:
    """Record successful sends in one transaction; how many rows were still pending.

    One write per pass rather than per row: on SQLite every write transaction takes the single
    write lock that the alert engine needs to queue new alerts.
    """
    batch = [claimed] if isinstance(claimed, Claimed) else list(claimed)
    if not batch:
        return 0
    with write_lock(engine), engine.begin() as conn:
        done: Any = conn.execute(
            update(AlertDelivery)
            .where(AlertDelivery.id.in_([c.id for c in batch]), AlertDelivery.status == "pending")
            .values(status="sent", delivered_at=utcnow(), last_error=None)
        )
    return int(done.rowcount)


def mark_failed(
    engine: Engine, claimed: Claimed, error: str, *, retry_at: datetime | None
) -> bool:
    """Record a failed try: pending again at ``retry_at``, or dead when ``retry_at`` is None.

    Only while the row is still this try's (same attempt number): a worker whose lease expired
    must not overwrite the try of the worker that took over.
    """
    values: dict[str, Any] = {"last_error": error[:2000]}
    if retry_at is None:
        values["status"] = "dead"
    else:
        values["next_attempt_at"] = retry_at
    with write_lock(engine), engine.begin() as conn:
        done = conn.execute(
            update(AlertDelivery)
            .where(AlertDelivery.id == claimed.id, AlertDelivery.status == "pending",
                   AlertDelivery.attempts == claimed.attempt)
            .values(**values)
        )
    return done.rowcount == 1


def release(engine: Engine, claimed: Sequence[Claimed], *, at: datetime | None = None) -> None:
    """Give claimed rows back untried (breaker opened, shutdown): the try does not count."""
    when = at or utcnow()
    with write_lock(engine), engine.begin() as conn:
        for c in claimed:
            conn.execute(
                update(AlertDelivery)
                .where(AlertDelivery.id == c.id, AlertDelivery.status == "pending",
                       AlertDelivery.attempts == c.attempt)
                .values(attempts=AlertDelivery.attempts - 1, next_attempt_at=when)
            )


def requeue_dead(session: Session, delivery_ids: Collection[int] | None = None) -> int:
    """Put dead deliveries back to pending with a fresh attempt budget; how many."""
    stmt = (
        update(AlertDelivery)
        .where(AlertDelivery.status == "dead")
        .values(status="pending", attempts=0, next_attempt_at=utcnow())
    )
    if delivery_ids is not None:
        stmt = stmt.where(AlertDelivery.id.in_(list(delivery_ids)))
    result: Any = session.execute(stmt)
    return int(result.rowcount)
