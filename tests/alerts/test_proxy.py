"""Webhooks through the proxy the environment names, and straight past it when NO_PROXY says so.

A webhook is sent with http.client unless HTTP_PROXY / HTTPS_PROXY / ALL_PROXY name a proxy for
its host, in which case httpx sends it through that proxy. Here the proxy is a real one on
127.0.0.1 (:class:`ForwardingProxy`), so each test can tell which way a send went: the proxy saw
it, or the test's own thread opened an http.client connection.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.alerts.channels import DeliveryFailed, Notification, WebhookChannel
from falcon.alerts.delivery import DeliveryWorker
from falcon.alerts.outbox import queue_alert
from falcon.alerts.settings import AlertSettings
from falcon.db.engine import transaction
from falcon.db.models import AlertDelivery

from .servers import ForwardingProxy, WebhookReceiver, closed_port

TOKEN = "T000/B000/SECRETTOKEN"  # the webhook URL's secret path: WebhookReceiver.url()'s
PROXY_PASSWORD = "proxy-s3cret"


def note(i: int) -> Notification:
    return Notification(i, f"AAPL crossed 200 #{i}", datetime(2024, 3, 5, 15, 0, tzinfo=UTC),
                        "AAPL", 1)


def send_all(url: str, *ids: int, timeout_s: float = 5.0) -> None:
    """Build the channel (after the test set the environment, as a worker starting would) and
    send one alert per id."""
    channel = WebhookChannel("slack", url, key="text", timeout_s=timeout_s)
    try:
        for i in ids:
            channel.send(note(i))
    finally:
        channel.close()


def assert_arrived(receiver: WebhookReceiver, *ids: int) -> None:
    assert receiver.event_ids() == [str(i) for i in ids]
    for r, i in zip(receiver.received, ids, strict=True):
        assert r.path == f"/services/{TOKEN}"
        assert r.body == {"text": f"AAPL crossed 200 #{i} (alert #{i})"}
        assert r.headers["Idempotency-Key"] == f"falcon-alert-{i}"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_http_webhook_goes_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]], variable: str,
) -> None:
    # ALL_PROXY is the proxy for every scheme (curl, httpx and requests all read it).
    monkeypatch.setenv(variable, proxy.url())
    send_all(receiver.url(), 1, 2)
    assert proxy.seen == [("POST", receiver.url())] * 2  # absolute-URI form: proxied
    assert direct == []  # and never straight to the receiver
    assert_arrived(receiver, 1, 2)


def test_proxy_credentials_are_sent_to_the_proxy(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url(f"falcon:{PROXY_PASSWORD}@"))
    send_all(receiver.url(), 1)
    assert proxy.auth == ["Basic ZmFsY29uOnByb3h5LXMzY3JldA=="]  # falcon:proxy-s3cret
    assert "Proxy-Authorization" not in receiver.received[0].headers
    assert_arrived(receiver, 1)


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "example.com, 127.0.0.1", "*"])
def test_no_proxy_host_goes_direct_with_http_client(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]], no_proxy: str,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", no_proxy)
    send_all(receiver.url(), 1, 2)
    assert proxy.seen == []
    # WebhookReceiver speaks HTTP/1.0: a connection per send.
    assert direct == [("127.0.0.1", receiver.port)] * 2
    assert_arrived(receiver, 1, 2)


def test_lowercase_no_proxy_counts_too(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]],
) -> None:
    monkeypatch.setenv("http_proxy", proxy.url())
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    send_all(receiver.url(), 1)
    assert proxy.seen == []
    assert direct == [("127.0.0.1", receiver.port)]
    assert_arrived(receiver, 1)


def test_https_proxy_is_not_used_for_an_http_webhook(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]],
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    send_all(receiver.url(), 1)
    assert proxy.seen == []
    assert direct == [("127.0.0.1", receiver.port)]
    assert_arrived(receiver, 1)


def test_the_environment_is_read_when_the_channel_is_built(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]],
) -> None:
    # Not once at import: a worker started after the proxy was configured uses it.
    send_all(receiver.url(), 1)
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    send_all(receiver.url(), 2)
    assert direct == [("127.0.0.1", receiver.port)]
    assert proxy.seen == [("POST", receiver.url())]
    assert_arrived(receiver, 1, 2)


def test_https_webhook_tunnels_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, tls_receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]],
) -> None:
    # As hooks.slack.com would be reached from behind a proxy: CONNECT, then TLS end to end
    # (the proxy sees the host and port, never the path that is the secret).
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    send_all(tls_receiver.url(), 1, 2)
    # A tunnel per send: WebhookReceiver speaks HTTP/1.0 and closes after each answer.
    assert proxy.seen == [("CONNECT", f"127.0.0.1:{tls_receiver.port}")] * 2
    assert direct == []
    assert_arrived(tls_receiver, 1, 2)


def test_https_webhook_on_no_proxy_goes_direct(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, tls_receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]],
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    send_all(tls_receiver.url(), 1)
    assert proxy.seen == []
    assert direct == [("127.0.0.1", tls_receiver.port)]
    assert_arrived(tls_receiver, 1)


def assert_no_secret(text: str) -> None:
    for secret in (TOKEN, "SECRETTOKEN", "/services/", PROXY_PASSWORD, "falcon:"):
        assert secret not in text


def failure(url: str, timeout_s: float = 5.0) -> DeliveryFailed:
    channel = WebhookChannel("slack", url, key="text", timeout_s=timeout_s)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            channel.send(note(1))
    finally:
        channel.close()
    return caught.value


def test_proxied_failures_name_no_secret(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    userinfo = f"falcon:{PROXY_PASSWORD}@"

    # The proxy itself is down.
    monkeypatch.setenv("HTTP_PROXY", f"http://{userinfo}127.0.0.1:{closed_port()}")
    down = failure(receiver.url())
    assert "ConnectError" in str(down) and not down.permanent
    assert_no_secret(str(down))

    # The proxy is up, the webhook host behind it is not: the proxy answers 502.
    monkeypatch.setenv("HTTP_PROXY", proxy.url(userinfo))
    gone = failure(f"http://127.0.0.1:{closed_port()}/services/{TOKEN}")
    assert "HTTP 502" in str(gone) and not gone.permanent
    assert_no_secret(str(gone))

    # The webhook host answers too late.
    receiver.script.append("hang")
    late = failure(receiver.url(), timeout_s=0.5)
    receiver.release()
    assert "timed out after 0.5s" in str(late)
    assert_no_secret(str(late))

    for exc in (down, gone, late):
        # Nothing chained that a traceback would print (the library's error, with its URL).
        assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
        assert str(exc).startswith("slack http://127.0.0.1:")
    for record in caplog.records:
        assert_no_secret(record.getMessage())


def test_proxied_sends_log_no_secret(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # httpx logs each request at INFO with its whole URL; `falcon -v` would print the token.
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HTTP_PROXY", proxy.url(f"falcon:{PROXY_PASSWORD}@"))
    send_all(receiver.url(), 1)
    assert_arrived(receiver, 1)
    requests = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    # The host stays, for whoever reads the log; the path is gone (how it is masked depends on
    # which webhook URLs the process has seen: "http://host:port" or "http://host:port/***").
    assert len(requests) == 1
    assert requests[0].startswith(f"HTTP Request: POST http://127.0.0.1:{receiver.port}")
    assert requests[0].endswith(' "HTTP/1.1 200 OK"')
    for record in caplog.records:
        assert_no_secret(record.getMessage())


def test_an_unusable_proxy_fails_sends_not_the_worker(
    monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]],
) -> None:
    # A proxy httpx cannot speak (SOCKS without the socksio extra, an unknown scheme): the
    # channel is still built, so email and the other webhook keep working, and each send
    # says why it failed rather than slipping past the proxy the environment asked for.
    monkeypatch.setenv("ALL_PROXY", f"gopher://falcon:{PROXY_PASSWORD}@127.0.0.1:70")
    channel = WebhookChannel("slack", receiver.url(), key="text", timeout_s=5.0)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            channel.send(note(1))
    finally:
        channel.close()
    assert "proxy gopher://127.0.0.1:70" in str(caught.value)
    assert not caught.value.permanent
    assert_no_secret(str(caught.value))
    assert direct == [] and receiver.received == []


def test_the_worker_delivers_through_the_proxy_and_stores_no_secret(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    engine: Engine, sessions: sessionmaker[Session], direct: list[tuple[str, int | None]],
) -> None:
    # The worker's own channels (build_channels), built after the proxy was configured.
    monkeypatch.setenv("HTTP_PROXY", proxy.url(f"falcon:{PROXY_PASSWORD}@"))
    settings = AlertSettings(slack_webhook_url=receiver.url(), http_timeout_s=5.0,
                             backoff_base_s=0.0, backoff_cap_s=0.0)
    with transaction(sessions) as s:
        eid = queue_alert(s, rule_id=None, channels=["slack"], message="AAPL crossed 200").id
    receiver.script.append(503)  # the first try fails behind the proxy, the second goes
    worker = DeliveryWorker(engine, settings)
    try:
        assert worker.run_once() == 1
        with sessions() as s:
            error = s.scalars(select(AlertDelivery.last_error)).one()
        assert error is not None and "HTTP 503" in error
        assert_no_secret(error)
        assert worker.run_once() == 1
    finally:
        worker.close()
    assert proxy.seen == [("POST", receiver.url())] * 2
    assert direct == []
    assert receiver.event_ids() == [str(eid)] * 2
    with sessions() as s:
        assert s.scalars(select(AlertDelivery.status)).all() == ["sent"]
