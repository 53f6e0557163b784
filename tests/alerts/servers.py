"""Loopback servers for the alert channels: a scriptable webhook receiver and an SMTP server."""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1; ``script`` answers in turn, then ``default``.

    An answer is a status code (200, 500 ...) or ``"hang"``: the request is recorded, then the
    handler holds the connection until :meth:`release` (or 30 s).
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: deque[int | str] = deque()
        self.default: int | str = 200
        self._release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with receiver._lock:
                    answer = receiver.script.popleft() if receiver.script else receiver.default
                    receiver.received.append(
                        Received(self.path, json.loads(raw or b"{}"), dict(self.headers)))
                if answer == "hang":
                    receiver._release.wait(30)
                    return
                self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, token: str = "T000/B000/SECRETTOKEN") -> str:
        """A Slack-like webhook URL whose path is the secret."""
        return f"http://127.0.0.1:{self.port}/services/{token}"

    def event_ids(self) -> list[str]:
        """The X-Falcon-Event-Id of every request so far."""
        return [r.headers.get("X-Falcon-Event-Id", "") for r in self.received]

    def release(self) -> None:
        """Let hanging requests go."""
        self._release.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpSink:
    """aiosmtpd's Controller on 127.0.0.1 recording messages; ``reply`` overrides the answer."""

    def __init__(self, *, auth: tuple[str, str] | None = None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        sink = self
        self.messages: list[Any] = []
        self.reply: str | None = None

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if sink.reply:
                    return sink.reply
                sink.messages.append(envelope)
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                          data: Any) -> Any:
            ok = (isinstance(data, LoginPassword) and auth is not None
                  and (data.login.decode(), data.password.decode()) == auth)
            return AuthResult(success=ok)

        kwargs: dict[str, Any] = {}
        if auth is not None:
            kwargs = {"authenticator": authenticator, "auth_require_tls": False}
        # aiosmtpd checks it is up by connecting to its port, so it cannot take port 0.
        self.port = closed_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
