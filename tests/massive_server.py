"""A real loopback HTTP server that speaks the parts of the Massive REST API Falcon uses."""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

_AGGS = re.compile(r"^/v2/aggs/ticker/(?P<t>[^/]+)/range/1/minute/(?P<a>\d+)/(?P<b>\d+)$")


@dataclass
class MassiveServer:
    """Minute bars per ticker (dicts with t,o,h,l,c,v); scripted failures before answers."""

    minute_bars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    page_size: int = 50000
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
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
                if owner.failures:
                    status, headers = owner.failures.popleft()
                    self._send(status, {"status": "ERROR"}, headers)
                    return
                url = urlparse(self.path)
                query = parse_qs(url.query)
                for prefix, route in owner.extra_routes.items():
                    if url.path.startswith(prefix):
                        status, body = route(url.path, query)
                        self._send(status, body)
                        return
                m = _AGGS.match(url.path)
                if not m:
                    self._send(404, {"status": "NOT_FOUND"})
                    return
                lo, hi = int(m["a"]), int(m["b"])
                rows = [r for r in owner.minute_bars.get(m["t"], []) if lo <= r["t"] <= hi]
                offset = int(query.get("offset", ["0"])[0])
                page = rows[offset : offset + owner.page_size]
                body: dict[str, Any] = {"status": "OK", "resultsCount": len(page), "results": page}
                if offset + owner.page_size < len(rows):
                    host, port = owner._httpd.server_address[:2]
                    body["next_url"] = (
                        f"http://{host}:{port}{url.path}?offset={offset + owner.page_size}"
                    )
                self._send(200, body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
