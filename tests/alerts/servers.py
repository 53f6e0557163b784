"""Loopback servers for the alert channels: a scriptable webhook receiver (HTTP or HTTPS), a
forwarding HTTP proxy and an SMTP server."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import select
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: How :class:`WebhookReceiver` answers a request: a status, a status and headers, or "hang".
Answer = int | str | tuple[int, dict[str, str]]


class _ThreadingHTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 (or ``host``: ``"::1"``, another 127.x address);
    ``script`` answers in turn, then ``default``.

    An answer is a status code (200, 500 ...), a status code with headers to send
    (``(307, {"Location": ...})``) or ``"hang"``: the request is recorded, then the handler
    holds the connection until :meth:`release` (or 30 s). With ``tls`` (a server context, see
    :func:`tls_server_context`) it speaks HTTPS.
    """

    def __init__(self, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.received: list[Received] = []
        self.script: deque[Answer] = deque()
        self.default: Answer = 200
        self.host = host
        self._release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                # The TLS handshake here, in the request's thread, not in the accepting one.
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.do_handshake()
                super().setup()

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
                code, headers = answer if isinstance(answer, tuple) else (int(answer), {})
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server_class = _ThreadingHTTPServer6 if ":" in host else ThreadingHTTPServer
        self.server = server_class((host, 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            self.scheme = "https"
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, token: str = "T000/B000/SECRETTOKEN") -> str:
        """A Slack-like webhook URL whose path is the secret."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/services/{token}"

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


def _loopback(host: str | None) -> bool:
    """Only 127.0.0.0/8, ::1 and localhost: the test proxy must never reach beyond this
    machine."""
    if host == "localhost":  # /etc/hosts: 127.0.0.1
        return True
    try:
        address = ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        return False
    return address in ipaddress.ip_network("127.0.0.0/8") or address == ipaddress.ip_address("::1")


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te",
               "trailer", "transfer-encoding", "upgrade"}


class ForwardingProxy:
    """An HTTP proxy on 127.0.0.1 that forwards to loopback hosts only (127.0.0.0/8, ::1 and
    localhost), recording what it saw.

    Absolute-URI requests (``POST http://127.0.0.1:port/path``, how a client sends an http://
    URL through a proxy) are forwarded; ``CONNECT host:port`` (how it reaches an https:// URL)
    opens a byte tunnel. ``seen`` holds ``(method, target)`` per request; ``auth`` each one's
    ``Proxy-Authorization`` header (or None); ``threads`` the idents of the threads it handled
    connections in (its own forwarding is done with http.client, in those threads).
    """

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.auth: list[str | None] = []
        self.threads: set[int] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                proxy.threads.add(threading.get_ident())
                super().setup()

            def _record(self) -> None:
                proxy.seen.append((self.command, self.path))
                proxy.auth.append(self.headers.get("Proxy-Authorization"))

            def _answer(self, code: int, body: bytes = b"",
                        headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self._record()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = urlsplit(self.path)
                if target.scheme != "http" or not _loopback(target.hostname):
                    self._answer(403)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_BY_HOP}
                path = (target.path or "/") + (f"?{target.query}" if target.query else "")
                upstream = http.client.HTTPConnection(target.hostname or "", target.port,
                                                      timeout=10)
                try:
                    upstream.request(self.command, path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                except OSError:  # the origin is down: what a real proxy says then
                    self._answer(502)
                    return
                finally:
                    upstream.close()
                retry_after = response.getheader("Retry-After")
                self._answer(response.status, data,
                             {"Retry-After": retry_after} if retry_after else None)

            def do_CONNECT(self) -> None:
                self._record()
                host, _, port = self.path.rpartition(":")
                host = host.strip("[]")
                if not _loopback(host):
                    self._answer(403)
                    return
                try:
                    upstream = socket.create_connection((host, int(port)), timeout=10)
                except OSError:
                    self._answer(502)
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                with upstream:
                    ends = [self.connection, upstream]
                    while True:
                        ready, _, _ = select.select(ends, [], [], 30)
                        if not ready:
                            return
                        for end in ready:
                            data = end.recv(65536)
                            if not data:
                                return
                            (upstream if end is self.connection else self.connection).sendall(
                                data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, userinfo: str = "") -> str:
        """The proxy's URL, as HTTP_PROXY takes it (``userinfo``: ``user:password@``)."""
        return f"http://{userinfo}127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed_cert(folder: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (``cert.pem``, its key in ``key.pem``).

    It is its own CA, so a client that trusts the file (``SSL_CERT_FILE``) verifies the server
    by its IP address, as it would verify hooks.slack.com.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "falcon test 127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return folder / "cert.pem"


def tls_server_context(cert: Path) -> ssl.SSLContext:
    """A server context for :func:`self_signed_cert`'s certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, cert.with_name("key.pem"))
    return context


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
