"""Fixtures for the alert tests: loopback receivers, a forwarding proxy, engines on both
databases, and an environment without the machine's proxy variables."""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .servers import (
    ForwardingProxy,
    SmtpSink,
    WebhookReceiver,
    self_signed_cert,
    tls_server_context,
)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the machine (http_proxy, NO_PROXY ...): a test names its own, if any.

    A developer's HTTPS_PROXY would otherwise send the tests' loopback webhooks to it.
    """
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name == "REQUEST_METHOD":
            monkeypatch.delenv(name)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver on 127.0.0.1."""
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture
def tls_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    """An HTTPS receiver on 127.0.0.1 whose self-signed certificate this test trusts.

    SSL_CERT_FILE is read both by OpenSSL's default paths (http.client's
    ``ssl.create_default_context()``) and by httpx, so both ways verify the certificate.
    """
    cert = self_signed_cert(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    server = WebhookReceiver(tls=tls_server_context(cert))
    yield server
    server.close()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """An SMTP server (aiosmtpd) on 127.0.0.1."""
    server = SmtpSink()
    yield server
    server.close()


@pytest.fixture
def proxy() -> Iterator[ForwardingProxy]:
    """A forwarding HTTP proxy on 127.0.0.1 (to loopback hosts only)."""
    server = ForwardingProxy()
    yield server
    server.close()


@pytest.fixture
def direct(monkeypatch: pytest.MonkeyPatch,
           proxy: ForwardingProxy) -> list[tuple[str, int | None]]:
    """``(host, port)`` of every http.client connection opened from here on, in any thread
    (the delivery worker sends from a pool) but the proxy's, whose forwarding uses it too."""
    opened: list[tuple[str, int | None]] = []
    connect = http.client.HTTPConnection.connect

    def spy(self: http.client.HTTPConnection) -> None:
        if threading.get_ident() not in proxy.threads:
            opened.append((self.host, self.port))
        connect(self)

    monkeypatch.setattr(http.client.HTTPConnection, "connect", spy)
    return opened
