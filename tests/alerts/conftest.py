"""Fixtures for the alert tests: loopback receivers and engines on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .servers import SmtpSink, WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver on 127.0.0.1."""
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """An SMTP server (aiosmtpd) on 127.0.0.1."""
    server = SmtpSink()
    yield server
    server.close()
