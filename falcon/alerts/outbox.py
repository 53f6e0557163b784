"""The outbox: alerts and their deliveries as rows, so that no alert is lost across a restart.

:func:`queue_alert` writes the :class:`~falcon.db.models.AlertEvent` and one
:class:`~falcon.db.models.AlertDelivery` per channel in the caller's transaction: either the alert
and all of its deliveries exist, or none do. The dashboard channel is a row in the same database,
so it is delivered right there (an ``Event`` of kind ``alert`` for the live pages) and its delivery
row is born ``sent``; the other channels start ``pending`` and wait for the delivery worker.

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

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from falcon.db.models import AlertDelivery, AlertEvent, Event
from falcon.db.types import utcnow

__all__ = [
    "ALERTS_CHANNEL",
    "EVENTS_CHANNEL",
    "Claimed",
    "claim_due",
    "mark_failed",
    "mark_sent",
    "queue_alert",
    "release",
]

#: NOTIFY channel the delivery worker LISTENs on (PostgreSQL): a new alert wakes it at once.
ALERTS_CHANNEL = "falcon_alerts"
#: NOTIFY channel of the live dashboard pages (the same one the screener signals).
EVENTS_CHANNEL = "falcon_events"


def _is_pg(bind: Session | Engine) -> bool:
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return engine.dialect.name == "postgresql"


def event_payload(event: AlertEvent, **extra: Any) -> dict[str, Any]:
    """What the dashboard's live ``alert`` renderer reads (and the idempotency key)."""
    return {
        "event_id": event.id,
        "rule_id": event.rule_id,
        "ticker": event.ticker,
        "message": event.message,
        "latency_ms": event.latency_ms,
        "created_at": event.created_at.isoformat(),
        **extra,
    }


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
    """Insert an alert and its deliveries in ``session``'s transaction (the caller commits)."""
    now = utcnow()
    event = AlertEvent(rule_id=rule_id, ticker=ticker, message=message, latency_ms=latency_ms,
                       created_at=now)
    session.add(event)
    session.flush()
    remote = False
    for channel in dict.fromkeys(channels):
        if channel == "dashboard":
            session.add(Event(kind="alert", ts=now, payload=event_payload(event, test=test)))
            session.add(AlertDelivery(event_id=event.id, channel=channel, status="sent",
                                      attempts=1, next_attempt_at=now, delivered_at=now))
        else:
            remote = True
            session.add(AlertDelivery(event_id=event.id, channel=channel, status="pending",
                                      attempts=0, next_attempt_at=now))
    if _is_pg(session):
        # NOTIFY is transactional: the worker and live pages hear it only once this commits.
        if remote:
            session.execute(select(func.pg_notify(ALERTS_CHANNEL, str(event.id))))
        if "dashboard" in channels:
            session.execute(select(func.pg_notify(EVENTS_CHANNEL, "alert")))
    return event


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
    with engine.begin() as conn:
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
    with engine.begin() as conn:
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
    with engine.begin() as conn:
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
    with engine.begin() as conn:
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
