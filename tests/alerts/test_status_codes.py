"""How the worker classes a webhook's answer: a redirect and a 4xx (but 408 and 429) are dead at
once, a 5xx, 408 and 429 are retried, ``Retry-After`` honoured up to the backoff cap; the same
whether the webhook is reached directly or through the proxy the environment names."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.alerts.delivery import DeliveryWorker
from falcon.alerts.outbox import queue_alert
from falcon.alerts.settings import AlertSettings
from falcon.db.engine import transaction
from falcon.db.models import AlertDelivery
from falcon.db.types import utcnow

from .servers import ForwardingProxy, WebhookReceiver

TOKEN = "T000/B000/SECRETTOKEN"


@pytest.fixture(params=["direct", "proxied"])
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
          proxy: ForwardingProxy) -> Iterator[str]:
    """Each test twice: straight to the webhook, and through a proxy (HTTP_PROXY)."""
    if request.param == "proxied":
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
    yield request.param
    if request.param == "proxied":
        assert proxy.seen, "the proxied run did not go through the proxy"


@pytest.fixture
def elsewhere() -> Iterator[WebhookReceiver]:
    """Where a redirect points: nothing may arrive here."""
    server = WebhookReceiver()
    yield server
    server.close()


def deliver(engine: Engine, sessions: sessionmaker[Session], url: str,
            **kw: float) -> AlertDelivery:
    """Queue one slack alert, run one pass of a worker built as `falcon alerts run` builds it."""
    settings = AlertSettings(slack_webhook_url=url, http_timeout_s=5.0, max_attempts=5,
                             **{"backoff_base_s": 0.0, "backoff_cap_s": 0.0, **kw})
    with transaction(sessions) as s:
        queue_alert(s, rule_id=None, channels=["slack"], message="AAPL crossed 200")
    return run_once(engine, sessions, settings)


def run_once(engine: Engine, sessions: sessionmaker[Session],
             settings: AlertSettings) -> AlertDelivery:
    """One pass of a worker with ``settings`` over the one queued alert; its delivery row."""
    worker = DeliveryWorker(engine, settings)
    try:
        assert worker.run_once() == 1
    finally:
        worker.close()
    with sessions() as s:
        return s.scalars(select(AlertDelivery)).one()


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_dead_at_once(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver,
    elsewhere: WebhookReceiver, route: str, code: int,
) -> None:
    # A webhook URL that moved is the operator's to update; following it would hand the
    # alert (and the Idempotency-Key) to wherever the answer points.
    receiver.default = (code, {"Location": elsewhere.url("MOVED")})
    row = deliver(engine, sessions, receiver.url(TOKEN))
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error == f"slack http://127.0.0.1:{receiver.port}: HTTP {code} (not retried)"
    assert len(receiver.received) == 1
    assert elsewhere.received == []


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 413, 422])
def test_a_4xx_is_dead_at_once(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver, route: str,
    code: int,
) -> None:
    receiver.default = code
    row = deliver(engine, sessions, receiver.url(TOKEN))
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error == f"slack http://127.0.0.1:{receiver.port}: HTTP {code} (not retried)"
    assert len(receiver.received) == 1


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
def test_a_5xx_408_and_429_are_retried(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver, route: str,
    code: int,
) -> None:
    receiver.script.append(code)  # then 200
    row = deliver(engine, sessions, receiver.url(TOKEN))
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error == f"slack http://127.0.0.1:{receiver.port}: HTTP {code}"
    settings = AlertSettings(slack_webhook_url=receiver.url(TOKEN), http_timeout_s=5.0,
                             backoff_base_s=0.0, backoff_cap_s=0.0)
    row = run_once(engine, sessions, settings)
    assert (row.status, row.attempts) == ("sent", 2)
    assert len(receiver.received) == 2


@pytest.mark.parametrize(("retry_after", "cap", "expected"), [
    ("120", 3600.0, 120.0),  # the server's wish
    ("7200", 600.0, 600.0),  # capped
])
def test_retry_after_is_honoured_up_to_the_cap(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver, route: str,
    retry_after: str, cap: float, expected: float,
) -> None:
    receiver.default = (429, {"Retry-After": retry_after})
    before = utcnow()
    row = deliver(engine, sessions, receiver.url(TOKEN), backoff_cap_s=cap)
    after = utcnow()
    assert (row.status, row.attempts) == ("pending", 1)
    assert "HTTP 429" in (row.last_error or "")
    due = row.next_attempt_at
    assert before + timedelta(seconds=expected) <= due <= after + timedelta(seconds=expected)
