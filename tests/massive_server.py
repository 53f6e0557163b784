"""A real loopback HTTP server that speaks the parts of the Massive (Polygon) REST API Falcon uses.

- ``/v2/aggs/ticker/{T}/range/1/minute/{from}/{to}``: minute bars from ``minute_bars`` (dicts with
  t, o, h, l, c, v), ``page_size`` a page, with an ``offset`` ``next_url`` (the paper trader's
  live source);
- ``/v3/reference/tickers`` and ``/v3/reference/splits`` in pages of ``reference_page_size``
  (whatever ``limit`` the client asks for) with a ``cursor`` ``next_url``, and
  ``/v3/reference/tickers/{T}`` details (the screener's reference data);
- ``extra_routes``: path prefix -> handler for anything else a test needs.

Failures are scripted two ways: ``failures`` (status, headers) are served first to whatever is
asked next, and :meth:`MassiveServer.fail` queues one for requests under a path prefix. Every
request's path and headers are kept so tests can check what was sent.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_AGGS = re.compile(r"^/v2/aggs/ticker/(?P<t>[^/]+)/range/1/minute/(?P<a>\d+)/(?P<b>\d+)$")


@dataclass
class Failure:
    """One scripted failure for requests whose path starts with ``prefix``."""

    prefix: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class MassiveServer:
    """The fake API's data, scripted failures and the requests it has seen."""

    minute_bars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tickers: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    splits: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 50000  # minute bars a page
    reference_page_size: int = 2  # reference rows a page (small, so that paging is exercised)
    failures: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    prefix_failures: deque[Failure] = field(default_factory=deque)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    next_host: str | None = None  # to test a reference next_url pointing elsewhere
    extra_routes: dict[str, Callable[[str, dict[str, list[str]]], tuple[int, Any]]] = field(
        default_factory=dict
    )

    def start(self) -> MassiveServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
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
                if owner.failures:
                    status, headers = owner.failures.popleft()
                    self._send(status, {"status": "ERROR"}, headers)
                    return
                for f in list(owner.prefix_failures):
                    if url.path.startswith(f.prefix):
                        owner.prefix_failures.remove(f)
                        self._send(f.status, {"status": "ERROR"}, f.headers)
                        return
                for prefix, route in owner.extra_routes.items():
                    if url.path.startswith(prefix):
                        status, body = route(url.path, urllib.parse.parse_qs(url.query))
                        self._send(status, body)
                        return
                query = dict(urllib.parse.parse_qsl(url.query))
                m = _AGGS.match(url.path)
                if m:
                    self._aggs(url.path, m, query)
                elif url.path == "/v3/reference/tickers":
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

            def _aggs(self, path: str, m: re.Match[str], query: dict[str, str]) -> None:
                lo, hi = int(m["a"]), int(m["b"])
                rows = [r for r in owner.minute_bars.get(m["t"], []) if lo <= r["t"] <= hi]
                offset = int(query.get("offset", "0"))
                page = rows[offset : offset + owner.page_size]
                body: dict[str, Any] = {"status": "OK", "resultsCount": len(page), "results": page}
                if offset + owner.page_size < len(rows):
                    body["next_url"] = f"{owner.base_url}{path}?offset={offset + owner.page_size}"
                self._send(200, body)

            def _page(self, path: str, rows: list[dict[str, Any]], query: dict[str, str]) -> None:
                size = owner.reference_page_size
                cursor = int(query.get("cursor", "0"))
                chunk = rows[cursor:cursor + size]
                doc: dict[str, Any] = {"status": "OK", "results": chunk, "count": len(chunk)}
                if cursor + size < len(rows):
                    host = owner.next_host or owner.base_url
                    keep = {k: v for k, v in query.items() if k != "cursor"}
                    keep["cursor"] = str(cursor + size)
                    doc["next_url"] = f"{host}{path}?{urllib.parse.urlencode(keep)}"
                self._send(200, doc)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def fail(self, prefix: str, status: int, **headers: str) -> None:
        """Answer the next request under ``prefix`` with ``status`` (``Retry_After=`` -> header)."""
        self.prefix_failures.append(Failure(prefix, status, {k.replace("_", "-"): v
                                                             for k, v in headers.items()}))

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
