"""/events/stream: new Event rows arrive as server-sent events, read from the database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from falcon.db.models import Event
from falcon.web.live import PollingWaiter, event_frames

from .conftest import SQLITE_ONLY, AuthActions, make_app, sessions_of


def _add_event(app: Flask, kind: str, **payload: Any) -> int:
    with sessions_of(app).begin() as s:
        event = Event(kind=kind, payload=payload)
        s.add(event)
        s.flush()
        return event.id


def _messages(chunks: Iterator[bytes], want: int, limit: int = 2000) -> list[dict[str, Any]]:
    """The first ``want`` data messages, reading at most ``limit`` chunks (no clock involved)."""
    found: list[dict[str, Any]] = []
    buffer = ""
    for _, chunk in zip(range(limit), chunks, strict=False):
        buffer += chunk.decode()
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            data = [line[6:] for line in frame.splitlines() if line.startswith("data: ")]
            if data:
                found.append(json.loads(data[0]))
        if len(found) >= want:
            break
    return found


def test_stream_delivers_a_new_event(
    app: Flask, client: FlaskClient, logged_in: AuthActions
) -> None:
    response = client.get("/events/stream", buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    chunks = iter(response.response)
    assert next(chunks).startswith(b"retry: ")  # the stream is open before the event exists
    event_id = _add_event(
        app, "fill", ticker="AAPL", qty=10, price=180.25, note="<script>x</script>"
    )
    messages = _messages(chunks, 1)
    response.close()
    assert messages[0]["id"] == event_id
    assert messages[0]["kind"] == "fill"
    assert (
        messages[0]["payload"]["note"] == "<script>x</script>"
    )  # JSON text; the page uses textContent


def test_stream_resumes_after_last_event_id_and_hides_private_kinds(
    app: Flask, client: FlaskClient, logged_in: AuthActions
) -> None:
    first = _add_event(app, "screen_done", run_id=1)
    _add_event(app, "login_failed", username="bob", ip="10.0.0.9")
    third = _add_event(app, "alert", message="AAPL crossed 200")
    response = client.get(
        "/events/stream", buffered=False, headers={"Last-Event-ID": str(first - 1)}
    )
    messages = _messages(iter(response.response), 2)
    response.close()
    assert [m["id"] for m in messages] == [first, third]
    assert "login_failed" not in json.dumps(messages)


@SQLITE_ONLY
def test_stream_accepts_after_and_sends_keepalives(
    app: Flask, client: FlaskClient, logged_in: AuthActions
) -> None:
    response = client.get("/events/stream?after=0", buffered=False)
    chunks = iter(response.response)
    seen = [next(chunks) for _ in range(3)]
    response.close()
    assert b": keepalive\n\n" in seen


@SQLITE_ONLY
def test_stream_ends_after_its_maximum_duration(db_url: str, logged_in: AuthActions) -> None:
    app = make_app(db_url, SSE_MAX_SECONDS=0.0)
    client = app.test_client()
    AuthActions(app, client).login()
    response = client.get("/events/stream", buffered=False)
    chunks = list(zip(range(100), response.response, strict=False))
    assert len(chunks) == 1  # only the retry hint: the client reconnects with Last-Event-ID


@SQLITE_ONLY
def test_stream_generator_stops_when_closed(app: Flask) -> None:
    frames = event_frames(
        sessions_of(app), 0, poll_s=0.0, max_s=3600.0, keepalive_s=0.0, waiter=PollingWaiter()
    )
    assert next(frames).startswith("retry:")
    assert next(frames) == ": keepalive\n\n"
    frames.close()  # what the WSGI server does when the client goes away
    assert next(frames, None) is None
