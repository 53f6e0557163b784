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
from typing import Protocol

from flask import Blueprint, Response, current_app, request
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.models import Event
from falcon.web import serialize
from falcon.web.extensions import db
from falcon.web.queries import public_events

log = logging.getLogger(__name__)
bp = Blueprint("live", __name__, url_prefix="/events")
BATCH = 100
RECONNECT_MS = 2000


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
