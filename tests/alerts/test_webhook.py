"""The webhook channel's kept-alive connections: reused between sends, replaced when stale."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from falcon.alerts.channels import Notification, WebhookChannel


class KeepAliveReceiver:
    """HTTP/1.1 on 127.0.0.1 counting connections; ``drop_after_reply`` closes each one after
    its answer without saying so, as a host whose idle timeout has passed does."""

    def __init__(self, *, drop_after_reply: bool) -> None:
        self.connections = 0
        self.drops = drop_after_reply
        self.posts: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                receiver.connections += 1

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append(self.headers["X-Falcon-Event-Id"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.close_connection = drop_after_reply

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T/B/SECRET"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=[False, True], ids=["kept", "dropped"])
def receiver(request: pytest.FixtureRequest) -> Iterator[KeepAliveReceiver]:
    r = KeepAliveReceiver(drop_after_reply=request.param)
    yield r
    r.close()


def note(i: int) -> Notification:
    return Notification(i, f"alert {i}", datetime(2024, 3, 5, 15, 0, tzinfo=UTC), "AAA", 1)


def test_sends_reuse_one_connection_and_survive_a_closed_one(
        receiver: KeepAliveReceiver) -> None:
    channel = WebhookChannel("slack", receiver.url, key="text", timeout_s=2.0)
    try:
        for i in range(1, 4):
            channel.send(note(i))  # a stale connection must not fail a send
    finally:
        channel.close()
    assert receiver.posts == ["1", "2", "3"]
    assert receiver.connections == (3 if receiver.drops else 1)
