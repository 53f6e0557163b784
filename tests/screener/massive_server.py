"""A real HTTP server on loopback speaking the Massive (Polygon) reference endpoints, for tests.

It serves ``/v3/reference/tickers`` and ``/v3/reference/splits`` in pages of ``page_size`` with a
``next_url`` cursor (whatever ``limit`` the client asks for), ``/v3/reference/tickers/{T}``
details, and scripted failures (status and headers) queued per path prefix. Every request's path
and headers are kept so tests can check what was sent.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Failure:
    """One scripted failure for requests whose path starts with ``prefix``."""

    prefix: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class MassiveServer:
    tickers: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    splits: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 2
    failures: deque[Failure] = field(default_factory=deque)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    next_host: str | None = None  # to test a next_url pointing elsewhere

    def start(self) -> MassiveServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                owner.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                for f in list(owner.failures):
                    if url.path.startswith(f.prefix):
                        owner.failures.remove(f)
                        self._send(f.status, {"status": "ERROR"}, f.headers)
                        return
                if url.path == "/v3/reference/tickers":
                    rows = [t for t in owner.tickers
                            if str(t.get("active", True)).lower() == query.get("active", "true")]
                    self._page(url.path, rows, query)
                elif url.path.startswith("/v3/reference/tickers/"):
                    symbol = urllib.parse.unquote(url.path.rsplit("/", 1)[1])
                    if symbol in owner.details:
                        self._send(200, {"status": "OK", "results": owner.details[symbol]})
                    else:
                        self._send(404, {"status": "NOT_FOUND"})
                elif url.path == "/v3/reference/splits":
                    since = query.get("execution_date.gte")
                    rows = [s for s in owner.splits
                            if since is None or s["execution_date"] >= since]
                    self._page(url.path, rows, query)
                else:
                    self._send(404, {"status": "NOT_FOUND"})

            def _page(self, path: str, rows: list[dict[str, Any]], query: dict[str, str]) -> None:
                cursor = int(query.get("cursor", "0"))
                chunk = rows[cursor:cursor + owner.page_size]
                doc: dict[str, Any] = {"status": "OK", "results": chunk, "count": len(chunk)}
                if cursor + owner.page_size < len(rows):
                    host = owner.next_host or owner.base_url
                    keep = {k: v for k, v in query.items() if k != "cursor"}
                    keep["cursor"] = str(cursor + owner.page_size)
                    doc["next_url"] = f"{host}{path}?{urllib.parse.urlencode(keep)}"
                self._send(200, doc)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, prefix: str, status: int, **headers: str) -> None:
        self.failures.append(Failure(prefix, status, {k.replace("_", "-"): v
                                                      for k, v in headers.items()}))

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
