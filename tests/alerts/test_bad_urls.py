"""A webhook URL that cannot be sent to, and a proxy variable that cannot be used.

A malformed webhook URL does not heal: its deliveries are dead at the first try, with the reason,
while the other channels (and the worker) go on. A malformed proxy variable is the operator's to
fix without touching the channel: its sends are retried, and the error names the variable. In
neither case does any error, log line or exception show the URL's secret path or query, or the
proxy's password.

Names that do not resolve to this machine are never looked up: :func:`loopback_only` makes every
other look-up fail as an unknown name would, so no test sends a packet beyond 127.0.0.0/8 or ::1
(nor would the code before the fix, which tried to).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.alerts.channels import DeliveryFailed, Notification, WebhookChannel, scrub
from falcon.alerts.delivery import DeliveryWorker
from falcon.alerts.outbox import queue_alert
from falcon.alerts.settings import AlertSettings
from falcon.db.engine import transaction
from falcon.db.models import AlertDelivery

from ..jobs.procs import wait_until
from .servers import ForwardingProxy, WebhookReceiver

TOKEN = "T000/B000/SECRETTOKEN"
PROXY_PASSWORD = "proxy-s3cret"
SECRETS = (TOKEN, "SECRETTOKEN", "/services/", PROXY_PASSWORD, "falcon:")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Name look-ups answer for loopback addresses and localhost only (no DNS query leaves)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            local = name == "localhost" or ipaddress.ip_address(name).is_loopback
        except ValueError:
            local = False
        if not local:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def trap() -> Any:
    """A receiver that nothing should reach (a malformed URL pointing at it is not sent)."""
    server = WebhookReceiver()
    yield server
    server.close()


def assert_no_secret(text: str | None) -> None:
    for secret in SECRETS:  # in any case: a host is shown lowercased
        assert secret.lower() not in (text or "").lower()


def note(i: int) -> Notification:
    from datetime import UTC, datetime

    return Notification(i, f"AAPL crossed 200 #{i}", datetime(2024, 3, 5, 15, 0, tzinfo=UTC),
                        "AAPL", 1)


def queue(sessions: sessionmaker[Session], channels: list[str], n: int = 1) -> list[int]:
    with transaction(sessions) as s:
        return [queue_alert(s, rule_id=None, channels=channels, message=f"AAPL #{i}").id
                for i in range(n)]


def rows(sessions: sessionmaker[Session], channel: str) -> list[AlertDelivery]:
    with sessions() as s:
        return list(s.scalars(select(AlertDelivery).where(AlertDelivery.channel == channel)
                              .order_by(AlertDelivery.id)))


# (id, URL with {port} the trap's, what the reason says)
MALFORMED = [
    ("port-out-of-range", "http://127.0.0.1:99999/services/{token}", "port"),
    ("port-not-a-number", "http://127.0.0.1:8o8o/services/{token}", "port"),
    ("port-zero", "http://127.0.0.1:0/services/{token}", "port"),
    ("ftp-scheme", "ftp://127.0.0.1:{port}/services/{token}", "scheme 'ftp'"),
    ("no-scheme", "hooks.slack.com/services/{token}", "no scheme"),
    ("scheme-relative", "//127.0.0.1:{port}/services/{token}", "no scheme"),
    ("no-host", "http:///services/{token}", "no host"),
    ("space-in-host", "http://hooks slack.com/services/{token}", "host"),
    ("empty-label", "http://hooks..slack.com/services/{token}", "host"),
    ("label-too-long", "http://" + "a" * 64 + ".slack.com/services/{token}", "host"),
    ("bad-ipv4", "http://127.0.0.999:{port}/services/{token}", "valid URL"),
    ("bad-a-label", "http://xn--/services/{token}", "valid URL"),
    # Backslashes for slashes: the path (the token) reads as part of the host.
    ("backslashes", r"https://hooks.slack.com\services\T000\B000\SECRETTOKEN", "host"),
    ("backslashes-non-ascii", r"https://hooks.slack.com\services\T000\B000\SECRETTOKENé",
     "valid URL"),
    ("unclosed-ipv6", "http://[::1/services/{token}", "valid URL"),
    ("control-character", "http://127.0.0.1:{port}/services/{token}\r\nX-Injected: 1",
     "valid URL"),
]


def malformed(template: str, trap: WebhookReceiver) -> str:
    return template.format(port=trap.port, token=TOKEN)


@pytest.mark.parametrize(("template", "reason"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_a_malformed_webhook_url_is_dead_at_once_and_the_rest_is_delivered(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver,
    trap: WebhookReceiver, caplog: pytest.LogCaptureFixture, template: str, reason: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    # The worker's own channels (build_channels), as `falcon alerts run` builds them.
    settings = AlertSettings(slack_webhook_url=malformed(template, trap),
                             discord_webhook_url=receiver.url(), http_timeout_s=5.0,
                             backoff_base_s=0.0, backoff_cap_s=0.0, max_attempts=5)
    ids = queue(sessions, ["slack", "discord"], n=2)
    worker = DeliveryWorker(engine, settings)
    try:
        assert worker.run_once() == 4
        assert worker.run_once() == 0  # nothing left to retry: a malformed URL does not heal
    finally:
        worker.close()
    dead = rows(sessions, "slack")
    assert [(r.status, r.attempts) for r in dead] == [("dead", 1), ("dead", 1)]
    for row in dead:
        assert row.last_error is not None
        assert row.last_error.startswith("slack ")
        assert "webhook URL is not usable" in row.last_error and reason in row.last_error
        assert "FALCON_SLACK_WEBHOOK_URL" in row.last_error and "not retried" in row.last_error
        assert_no_secret(row.last_error)
    assert [r.status for r in rows(sessions, "discord")] == ["sent", "sent"]
    assert sorted(receiver.event_ids()) == sorted(str(i) for i in ids)  # sent concurrently
    assert trap.received == []  # never sent anywhere, as plain HTTP or otherwise
    assert worker.breakers["slack"].state == "closed"  # permanent: not the host's fault
    for record in caplog.records:
        assert_no_secret(record.getMessage())
        assert record.exc_info is None  # an expected failure, not a traceback


@pytest.mark.parametrize(("template", "reason"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_the_channel_says_why_and_shows_no_secret(
    trap: WebhookReceiver, template: str, reason: str,
) -> None:
    channel = WebhookChannel("slack", malformed(template, trap), key="text", timeout_s=5.0)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            channel.send(note(1))
    finally:
        channel.close()
    failed = caught.value
    assert failed.permanent
    assert reason in str(failed)
    assert_no_secret(str(failed))
    # Nothing chained that a traceback would print (a library's error, with the URL in it).
    assert failed.__cause__ is None
    assert failed.__context__ is None or failed.__suppress_context__
    assert trap.received == []


@pytest.mark.parametrize("error", [httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError])
def test_a_url_the_library_refuses_before_sending_is_dead_at_once(error: type[Exception]) -> None:
    # What the checks at construction should have caught already, if httpx refuses the URL at
    # send time anyway: it does not heal either. Its text (which may quote the URL) is dropped.
    url = f"https://hooks.slack.com/services/{TOKEN}"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise error(f"cannot send to {url}")

    channel = WebhookChannel("slack", url, key="text", timeout_s=5.0,
                             client=httpx.Client(transport=httpx.MockTransport(refuse)))
    try:
        with pytest.raises(DeliveryFailed) as caught:
            channel.send(note(1))
    finally:
        channel.close()
    assert caught.value.permanent
    assert str(caught.value) == (
        f"slack https://hooks.slack.com: the webhook URL is not usable: {error.__name__} "
        "(not retried; fix FALCON_SLACK_WEBHOOK_URL)")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_worker_loop_survives_a_malformed_url(
    engine: Engine, sessions: sessionmaker[Session], receiver: WebhookReceiver,
) -> None:
    settings = AlertSettings(slack_webhook_url=f"http://127.0.0.1:99999/services/{TOKEN}",
                             discord_webhook_url=receiver.url(), http_timeout_s=5.0,
                             poll_interval_s=0.2, backoff_base_s=0.0, backoff_cap_s=0.0)
    worker = DeliveryWorker(engine, settings)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        first = queue(sessions, ["slack", "discord"])
        wait_until(lambda: [r.status for r in rows(sessions, "discord")] == ["sent"],
                   "the first alert on discord")
        later = queue(sessions, ["slack", "discord"])
        wait_until(lambda: [r.status for r in rows(sessions, "discord")] == ["sent", "sent"],
                   "the second alert on discord")
        wait_until(lambda: [r.status for r in rows(sessions, "slack")] == ["dead", "dead"],
                   "both slack deliveries dead")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert receiver.event_ids() == [str(first[0]), str(later[0])]


def test_a_url_httpx_would_send_is_sent_directly_too(trap: WebhookReceiver) -> None:
    # Not malformed: a path with characters to percent-encode. httpx (the proxied way) sends
    # it; http.client was given it raw and raised UnicodeEncodeError on every try.
    url = f"http://127.0.0.1:{trap.port}/services/T000/B000/SECRÉT TOKEN"
    channel = WebhookChannel("slack", url, key="text", timeout_s=5.0)
    try:
        channel.send(note(1))
    finally:
        channel.close()
    assert [r.path for r in trap.received] == ["/services/T000/B000/SECR%C3%89T%20TOKEN"]


def test_a_host_that_does_not_resolve_is_retried() -> None:
    # Well formed (an international name), only unknown today: DNS may know it tomorrow.
    channel = WebhookChannel("slack", f"https://hööks.slack.invalid/services/{TOKEN}",
                             key="text", timeout_s=5.0)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            channel.send(note(1))
    finally:
        channel.close()
    assert not caught.value.permanent
    assert "ConnectError" in str(caught.value)
    assert_no_secret(str(caught.value))


def test_scrub_survives_unparsable_urls_and_hides_queries() -> None:
    # The worker scrubs every error with the configured URLs: one urlsplit cannot parse must
    # not turn a failed send into an exception in the worker's loop.
    broken = f"http://[::1/services/{TOKEN}"
    assert scrub(f"POST {broken} failed: /services/{TOKEN}", [broken]) == (
        "POST <invalid url> failed: /***")
    # Webhook tokens live in the query too (?token=..., ?key=...&token=...).
    url = f"https://chat.example.com/v1/spaces/AAA/messages?key=K3YS3CRET&token={TOKEN}"
    text = scrub(f"bad request to /v1/spaces/AAA/messages?key=K3YS3CRET&token={TOKEN} and "
                 f"key=K3YS3CRET&token={TOKEN}", [url])
    assert "K3YS3CRET" not in text and "SECRETTOKEN" not in text
    assert "/v1/spaces/AAA/messages" not in text


# --- the proxy variables -------------------------------------------------------------------

BAD_PROXIES = [
    ("port-not-a-number", "http://falcon:{password}@127.0.0.1:notaport"),
    ("port-out-of-range", "http://falcon:{password}@127.0.0.1:99999"),
    ("port-zero", "http://falcon:{password}@127.0.0.1:0"),
    ("no-host", "http://falcon:{password}@:3128"),
    ("bad-ipv4", "http://falcon:{password}@127.0.0.999:3128"),
    ("unclosed-ipv6", "http://falcon:{password}@[::1:3128"),
    # A password with a '/' not percent-encoded: the rest of it reads as a path.
    ("slash-in-password", "http://falcon:proxy/{password}@127.0.0.1:3128"),
    ("space-in-host", "http://falcon:{password}@proxy host:3128"),
]


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
@pytest.mark.parametrize("value", [b[1] for b in BAD_PROXIES], ids=[b[0] for b in BAD_PROXIES])
def test_a_malformed_proxy_variable_is_retried_and_named(
    monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]], caplog: pytest.LogCaptureFixture,
    variable: str, value: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(variable, value.format(password=PROXY_PASSWORD))
    channel = WebhookChannel("slack", receiver.url(TOKEN), key="text", timeout_s=5.0)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            channel.send(note(1))
    finally:
        channel.close()
    failed = caught.value
    assert not failed.permanent  # the operator fixes the variable; the alert still goes then
    assert f"{variable} is not a valid proxy URL" in str(failed)
    assert str(failed).startswith(f"slack http://127.0.0.1:{receiver.port}: ")
    assert_no_secret(str(failed))
    assert "notaport" not in str(failed) and "proxy host" not in str(failed)  # not its value
    assert failed.__cause__ is None
    assert failed.__context__ is None or failed.__suppress_context__
    # Never straight to the webhook instead: the environment asked for a proxy.
    assert direct == [] and receiver.received == []
    for record in caplog.records:
        assert_no_secret(record.getMessage())


def test_a_malformed_https_proxy_is_named(
    monkeypatch: pytest.MonkeyPatch, tls_receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]],
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://falcon:{PROXY_PASSWORD}@127.0.0.1:notaport")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")  # not for an https:// webhook
    channel = WebhookChannel("slack", tls_receiver.url(TOKEN), key="text", timeout_s=5.0)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            channel.send(note(1))
    finally:
        channel.close()
    assert not caught.value.permanent
    assert "HTTPS_PROXY is not a valid proxy URL" in str(caught.value)
    assert_no_secret(str(caught.value))
    assert direct == [] and tls_receiver.received == []


def test_a_malformed_proxy_waits_for_the_operator_and_the_rest_is_delivered(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, sessions: sessionmaker[Session],
    receiver: WebhookReceiver, proxy: ForwardingProxy,
) -> None:
    # slack's host needs the proxy, whose variable is malformed; discord's is in NO_PROXY.
    monkeypatch.setenv("HTTP_PROXY", f"http://falcon:{PROXY_PASSWORD}@127.0.0.1:notaport")
    monkeypatch.setenv("NO_PROXY", "::1")
    other = WebhookReceiver(host="::1")
    try:
        settings = AlertSettings(slack_webhook_url=receiver.url(), discord_webhook_url=other.url(),
                                 http_timeout_s=5.0, backoff_base_s=0.0, backoff_cap_s=0.0,
                                 max_attempts=5)
        [eid] = queue(sessions, ["slack", "discord"])
        worker = DeliveryWorker(engine, settings)
        try:
            assert worker.run_once() == 2
        finally:
            worker.close()
        [waiting] = rows(sessions, "slack")
        assert (waiting.status, waiting.attempts) == ("pending", 1)
        assert "HTTP_PROXY is not a valid proxy URL" in (waiting.last_error or "")
        assert_no_secret(waiting.last_error)
        assert [r.status for r in rows(sessions, "discord")] == ["sent"]
        assert other.event_ids() == [str(eid)]
        # The operator fixes the variable and restarts the worker: the alert goes out.
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        worker = DeliveryWorker(engine, settings)
        try:
            assert worker.run_once() == 1
        finally:
            worker.close()
        assert [r.status for r in rows(sessions, "slack")] == ["sent"]
        assert proxy.seen == [("POST", receiver.url())]
        assert receiver.event_ids() == [str(eid)]
    finally:
        other.close()


class _Broken:
    """A channel with a bug: its exception quotes the webhook URL, token and all."""

    name = "slack"

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, note: Notification) -> None:
        raise RuntimeError(f"cannot POST {self.url}")


def test_an_unexpected_error_is_logged_without_the_secret(
    engine: Engine, sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"https://hooks.slack.com/services/{TOKEN}"
    settings = AlertSettings(slack_webhook_url=url, backoff_base_s=0.0, backoff_cap_s=0.0)
    queue(sessions, ["slack"])
    worker = DeliveryWorker(engine, settings, channels={"slack": _Broken(url)})  # type: ignore[dict-item]
    try:
        assert worker.run_once() == 1
    finally:
        worker.close()
    [row] = rows(sessions, "slack")
    assert row.status == "pending"  # a bug is not the URL's fault: retried
    assert row.last_error == "RuntimeError: cannot POST https://hooks.slack.com"
    # The traceback is still logged, for whoever fixes the bug, but scrubbed like the error.
    [logged] = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert "Traceback" in logged.getMessage() and "in send" in logged.getMessage()
    assert_no_secret(caplog.text)
