"""Live updates: /events/stream sends new Event rows as server-sent events.

The stream reads the database, never one process's memory, so it works with any number of
gunicorn workers and web nodes. It polls every ``SSE_POLL_SECONDS``; on PostgreSQL a LISTEN/NOTIFY
waiter can replace :class:`PollingWaiter` without touching the stream. Each stream ends after
``SSE_MAX_SECONDS`` (the browser's EventSource reconnects with Last-Event-ID, losing nothing), so
no worker thread is held forever, and it ends at once when the client goes away (the server closes
the generator).

gunicorn must run threaded workers (``--worker-class gthread``): a sync worker would be held by
one stream for its whole duration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

from flask import Blueprint, Response, current_app, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.models import Event
from falcon.web import serialize
from falcon.web.extensions import db
from falcon.web.queries import public_events

bp = Blueprint("live", __name__, url_prefix="/events")
BATCH = 100
RECONNECT_MS = 2000


class Waiter(Protocol):
    """Blocks until new events may exist or ``timeout`` seconds pass."""

    def wait(self, timeout: float) -> None:
        """Return when it is worth querying again."""


class PollingWaiter:
    """Just sleeps: works on SQLite and PostgreSQL alike."""

    def wait(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds."""
        time.sleep(timeout)


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
        waiter=PollingWaiter(),
    )
    response = Response(frames, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each frame on at once
    return response
