"""Live updates: /events/stream sends new Event rows as server-sent events.

The stream reads the database, never one process's memory, so it works with any number of
gunicorn workers and web nodes. On SQLite it polls every ``SSE_POLL_SECONDS``; on PostgreSQL it
LISTENs on ``falcon_events`` (a trigger NOTIFYs on every insert into ``events``, whichever process
or node wrote it) and queries as soon as a notification arrives, still re-checking every
``SSE_POLL_SECONDS`` so that a lost notification costs latency, never an event. Each stream
ends after ``SSE_MAX_SECONDS`` (the browser's EventSource reconnects with Last-Event-ID, losing
nothing), so no worker thread is held forever, and it ends at once when the client goes away
(the server closes the generator).

gunicorn must run threaded workers (``--worker-class gthread``): a sync worker would be held by
one stream for its whole duration.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from flask import Blueprint, Response, current_app, request
from sqlalchemy import Connection, Delete, Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.models import Event
from falcon.db.types import utcnow
from falcon.web import serialize
from falcon.web.extensions import db
from falcon.web.queries import public_events

log = logging.getLogger(__name__)
bp = Blueprint("live", __name__, url_prefix="/events")
BATCH = 100
RECONNECT_MS = 2000
PRUNE_BATCH = 5000


CHANNEL = "falcon_events"


class Waiter(Protocol):
    """Blocks until new events may exist or ``timeout`` seconds pass."""

    def wait(self, timeout: float) -> bool:
        """Return when it is worth querying again; True when woken by a notification."""

    def close(self) -> None:
        """Release what the waiter holds."""


class PollingWaiter:
    """Just sleeps: works on SQLite and PostgreSQL alike."""

    def wait(self, timeout: float) -> bool:
        """Sleep ``timeout`` seconds."""
        time.sleep(timeout)
        return False

    def close(self) -> None:
        """Nothing to release."""


class NotifyWaiter:
    """PostgreSQL LISTEN on :data:`CHANNEL`, on a connection of its own for this stream."""

    def __init__(self, conninfo: str) -> None:
        import psycopg

        self._conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        self._conn.execute(f"LISTEN {CHANNEL}")

    def wait(self, timeout: float) -> bool:
        """Block until a notification or ``timeout``; drain what else is already queued."""
        woken = False
        for _note in self._conn.notifies(timeout=timeout, stop_after=1):
            woken = True
        return woken

    def close(self) -> None:
        """Close the listening connection."""
        self._conn.close()


def waiter_for(engine: Engine) -> Waiter:
    """LISTEN/NOTIFY on PostgreSQL (polling if that connection fails), polling on SQLite."""
    if engine.dialect.name != "postgresql":
        return PollingWaiter()
    try:
        url = engine.url.set(drivername="postgresql")
        return NotifyWaiter(url.render_as_string(hide_password=False))
    except Exception as exc:  # the stream still works by polling
        log.warning("live events: LISTEN unavailable (%s), polling instead", type(exc).__name__)
        return PollingWaiter()


def _start_id(sessions: sessionmaker[Session]) -> int:
    """Where to resume: Last-Event-ID (reconnects), ``?after=``, else only new events."""
    for raw in (request.headers.get("Last-Event-ID"), request.args.get("after")):
        if raw is not None and raw.strip().isdigit():
            return int(raw.strip())
    with sessions() as s:
        return int(s.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0)


def _frame(event: Event) -> str:
    # One unnamed ("message") event per row with the kind inside the JSON, so that a page sees
    # every kind, including ones added later, through a single onmessage handler. json.dumps
    # escapes newlines, so payload text cannot break out of the data: line.
    data = json.dumps(serialize.event(event), default=serialize.json_default)
    return f"id: {event.id}\ndata: {data}\n\n"


def event_frames(
    sessions: sessionmaker[Session],
    after_id: int,
    *,
    poll_s: float,
    max_s: float,
    keepalive_s: float,
    waiter: Waiter,
) -> Iterator[str]:
    """SSE frames for public events with id > ``after_id`` until ``max_s`` seconds have passed."""
    try:
        yield from _frames(sessions, after_id, poll_s=poll_s, max_s=max_s,
                           keepalive_s=keepalive_s, waiter=waiter)
    finally:  # the client went away or the stream ran its course
        waiter.close()


def _frames(
    sessions: sessionmaker[Session], after_id: int, *, poll_s: float, max_s: float,
    keepalive_s: float, waiter: Waiter,
) -> Iterator[str]:
    yield f"retry: {RECONNECT_MS}\n\n"
    started = last_sent = time.monotonic()
    last_id = after_id
    while time.monotonic() - started < max_s:
        with sessions() as s:
            rows: Sequence[Event] = s.scalars(
                public_events().where(Event.id > last_id).order_by(Event.id).limit(BATCH)
            ).all()
        for row in rows:
            last_id = row.id
            yield _frame(row)
        now = time.monotonic()
        if rows:
            last_sent = now
        elif now - last_sent >= keepalive_s:
            # A comment line: keeps proxies from closing an idle stream and notices a gone client.
            yield ": keepalive\n\n"
            last_sent = now
        if len(rows) < BATCH:
            waiter.wait(poll_s)


@bp.route("/stream")
def stream() -> Response:
    """``text/event-stream`` of new events; each ``data:`` is ``{"id", "ts", "kind", "payload"}``.
    """
    cfg = current_app.config
    sessions = db.sessions
    frames = event_frames(
        sessions,
        _start_id(sessions),
        poll_s=float(cfg["SSE_POLL_SECONDS"]),
        max_s=float(cfg["SSE_MAX_SECONDS"]),
        keepalive_s=float(cfg["SSE_KEEPALIVE_SECONDS"]),
        waiter=waiter_for(db.engine),
    )
    response = Response(frames, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each frame on at once
    return response


# --- housekeeping ---------------------------------------------------------------------------


def prune_events(
    engine_or_session: Engine | Session, older_than: timedelta | datetime
) -> int:
    """Delete events older than ``older_than`` (an age, or a UTC cut-off time); returns how many.

    Events are the live-update transport, not a record (fills, orders and the audit log keep
    that), so the table only needs the last few days: a browser that reconnects resumes from an
    id seconds old, and login throttling looks back minutes. The retention is
    ``[web] events_retention_days`` (default 7); the scheduler's housekeeping calls this with it.

    Deletes in batches of :data:`PRUNE_BATCH` rows so that PostgreSQL never holds one long lock
    over the table the live pages read. With an :class:`Engine` each batch commits on its own;
    with a :class:`Session` the batches join the session's transaction and the caller commits.
    """
    if isinstance(older_than, timedelta):
        if older_than <= timedelta(0):
            raise ValueError(f"prune_events: older_than must be positive, got {older_than}")
        cutoff = utcnow() - older_than
    else:
        if older_than.tzinfo is None:
            raise ValueError("prune_events: older_than must be an aware (UTC) datetime")
        cutoff = older_than
    oldest = select(Event.id).where(Event.ts < cutoff).order_by(Event.id).limit(PRUNE_BATCH)
    stmt = delete(Event).where(Event.id.in_(oldest.scalar_subquery()))
    total = 0
    while True:
        if isinstance(engine_or_session, Engine):
            with engine_or_session.begin() as conn:
                deleted = _delete(conn, stmt)
        else:
            deleted = _delete(engine_or_session, stmt)
        total += deleted
        if deleted < PRUNE_BATCH:
            break
    if total:
        log.info("pruned %d events older than %s", total, cutoff.isoformat())
    return total


def _delete(target: Connection | Session, stmt: Delete) -> int:
    result = target.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)
