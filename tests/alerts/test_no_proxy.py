"""NO_PROXY: which webhook hosts go straight past the proxy the environment names.

The rules are curl's (CURLOPT_NOPROXY), which httpx says it follows: a comma-separated list of
names, each matching the host itself or any host under it as a domain (``example.com`` and
``.example.com`` both match ``example.com`` and ``www.example.com``, never ``notexample.com``);
``*`` for every host; IP addresses (IPv6 without brackets, or with them) compared as addresses,
with CIDR prefixes (``127.0.0.0/8``), never as a domain suffix. As in httpx and Python's urllib,
an entry with a port (``host:8080``, ``[::1]:8080``) matches that port only.

The channel decides once, and then sends either way itself: straight with http.client (the
``direct`` spy sees the connection) or through the proxy with httpx (the proxy sees the request).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from falcon.alerts.channels import (
    DeliveryFailed,
    Notification,
    WebhookChannel,
    no_proxy_matches,
)

from .servers import ForwardingProxy, WebhookReceiver

TOKEN = "T000/B000/SECRETTOKEN"


def note(i: int) -> Notification:
    return Notification(i, f"AAPL crossed 200 #{i}", datetime(2024, 3, 5, 15, 0, tzinfo=UTC),
                        "AAPL", 1)


def send(url: str) -> None:
    channel = WebhookChannel("slack", url, key="text", timeout_s=5.0)
    try:
        channel.send(note(1))
    finally:
        channel.close()


@pytest.fixture
def receiver6() -> Iterator[WebhookReceiver]:
    """A webhook receiver on ::1."""
    server = WebhookReceiver(host="::1")
    yield server
    server.close()


# --- the rules, host by host ---------------------------------------------------------------

MATCHES = [
    # (NO_PROXY, host, port, bypassed)
    ("localhost", "localhost", 80, True),
    ("LOCALHOST", "localhost", 80, True),
    ("localhost", "localhost.", 80, True),
    ("localhost.", "localhost", 80, True),
    ("localhost", "127.0.0.1", 80, False),  # names are not resolved
    ("example.com", "example.com", 443, True),
    ("example.com", "hooks.example.com", 443, True),
    ("example.com", "a.b.example.com", 443, True),
    ("example.com", "notexample.com", 443, False),
    ("example.com", "example.com.evil.net", 443, False),
    (".example.com", "hooks.example.com", 443, True),
    (".example.com", "example.com", 443, True),  # curl ignores the leading dot, as urllib does
    ("*.example.com", "hooks.example.com", 443, True),
    ("hooks.example.com", "example.com", 443, False),
    ("  example.org , example.com  ", "hooks.example.com", 443, True),
    ("example.org,,example.net", "hooks.example.com", 443, False),
    ("*", "hooks.example.com", 443, True),
    ("example.org, *", "hooks.example.com", 443, True),  # httpx: '*' anywhere in the list
    ("*example.com", "hooks.example.com", 443, False),  # no other wildcard
    ("", "hooks.example.com", 443, False),
    # ports
    ("example.com:8443", "hooks.example.com", 8443, True),
    ("example.com:8443", "hooks.example.com", 443, False),
    ("example.com:443", "hooks.example.com", 443, True),  # the scheme's port when none given
    ("127.0.0.1:8080", "127.0.0.1", 8080, True),
    ("127.0.0.1:8080", "127.0.0.1", 8081, False),
    ("127.0.0.1", "127.0.0.1", 8080, True),  # no port: every port
    # IPv4: as addresses, with CIDR; never as a domain suffix
    ("127.0.0.1", "127.0.0.1", 80, True),
    ("127.0.0.1", "127.0.0.2", 80, False),
    ("0.0.1", "127.0.0.1", 80, False),
    (".0.0.1", "127.0.0.1", 80, False),
    ("127.0.0.0/8", "127.0.0.1", 80, True),
    ("127.0.0.0/8", "127.1.2.3", 80, True),
    ("10.0.0.0/8", "127.0.0.1", 80, False),
    ("127.0.0.0/32", "127.0.0.1", 80, False),
    ("127.0.0.1/8", "127.9.9.9", 80, True),  # host bits set: the network still counts
    ("192.168.0.0/16", "hooks.example.com", 443, False),
    # IPv6: without brackets (curl's form) or with them, compared as addresses
    ("::1", "::1", 80, True),
    ("[::1]", "::1", 80, True),
    ("[::1]", "[::1]", 80, True),
    ("0:0:0:0:0:0:0:1", "::1", 80, True),
    ("::1/128", "::1", 80, True),
    ("fe80::/10", "fe80::1", 80, True),
    ("[::1]:8080", "::1", 8080, True),
    ("[::1]:8080", "::1", 8081, False),
    ("::1", "::2", 80, False),
    ("::1", "127.0.0.1", 80, False),
    ("127.0.0.1", "::1", 80, False),
    ("localhost,127.0.0.1,[::1]", "hooks.example.com", 443, False),
    ("[::1", "::1", 80, False),  # malformed entries match nothing (and break nothing)
    ("127.0.0.0/99", "127.0.0.1", 80, False),
]


@pytest.mark.parametrize(("no_proxy", "host", "port", "bypassed"), MATCHES)
def test_no_proxy_rules(no_proxy: str, host: str, port: int, bypassed: bool) -> None:
    assert no_proxy_matches(no_proxy, host, port) is bypassed


# --- the rules decide which way a send goes --------------------------------------------------

@pytest.mark.parametrize("no_proxy", [
    "127.0.0.0/8",  # CIDR, as curl documents it
    "127.0.0.1:{port}",  # the webhook's port
    "example.com, *",  # '*' anywhere in the list
    "localhost,127.0.0.1,[::1]",  # a bracketed IPv6 entry used to break the channel
    " 127.0.0.1 ",
])
def test_entries_naming_the_host_send_directly(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]], no_proxy: str,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=receiver.port))
    send(receiver.url(TOKEN))
    assert proxy.seen == []
    assert direct == [("127.0.0.1", receiver.port)]  # with http.client: one way, one decision
    assert receiver.event_ids() == ["1"]


@pytest.mark.parametrize("no_proxy", [
    "127.0.0.1:1",  # another port
    "0.0.1",  # an address is not a domain: no suffix match
    ".0.0.1",
    "127.0.0.2",
    "127.0.0.0/32",
    "localhost",  # a name is not resolved
    "::1",
    "[::1]",
    "localhost,::1,[::1]:{port}",
])
def test_entries_not_naming_the_host_leave_it_to_the_proxy(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]], no_proxy: str,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=receiver.port))
    send(receiver.url(TOKEN))
    assert proxy.seen == [("POST", receiver.url(TOKEN))]
    assert direct == []
    assert receiver.event_ids() == ["1"]


@pytest.mark.parametrize("no_proxy", ["::1", "[::1]", "[::1]:{port}", "::1/128",
                                      "0:0:0:0:0:0:0:1", "localhost, ::1"])
def test_ipv6_entries_send_an_ipv6_webhook_directly(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver6: WebhookReceiver,
    direct: list[tuple[str, int | None]], no_proxy: str,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=receiver6.port))
    send(receiver6.url(TOKEN))
    assert proxy.seen == []
    assert direct == [("::1", receiver6.port)]
    assert receiver6.event_ids() == ["1"]


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "[::1]:1", "::2"])
def test_an_ipv6_webhook_not_in_no_proxy_goes_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver6: WebhookReceiver,
    direct: list[tuple[str, int | None]], no_proxy: str,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", no_proxy)
    # Sent to the proxy; whether it arrives is httpcore's affair: it writes the absolute URI of
    # an IPv6 host without brackets ("http://::1:port/..."), which this proxy refuses, as a
    # strict one would (encode/httpx#392, the same for CONNECT).
    with contextlib.suppress(DeliveryFailed):
        send(receiver6.url(TOKEN))
    assert [method for method, _ in proxy.seen] == ["POST"]
    assert proxy.seen[0][1].endswith(f":{receiver6.port}/services/{TOKEN}")
    assert direct == []


@pytest.mark.parametrize("no_proxy", ["localhost", ".localhost", "LOCALHOST", "localhost.",
                                      "localhost:{port}"])
def test_a_named_host_in_no_proxy_goes_directly(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]], no_proxy: str,
) -> None:
    # localhost is 127.0.0.1 in /etc/hosts: the receiver, reached by name.
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=receiver.port))
    send(f"http://localhost:{receiver.port}/services/{TOKEN}")
    assert proxy.seen == []
    assert direct == [("localhost", receiver.port)]
    assert receiver.event_ids() == ["1"]


@pytest.mark.parametrize("no_proxy", ["calhost", "localhost:1", "127.0.0.1", "sub.localhost"])
def test_a_named_host_not_in_no_proxy_goes_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]], no_proxy: str,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", no_proxy)
    url = f"http://localhost:{receiver.port}/services/{TOKEN}"
    send(url)
    assert proxy.seen == [("POST", url)]
    assert direct == []
    assert receiver.event_ids() == ["1"]


def test_https_webhooks_follow_the_same_rules(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardingProxy, tls_receiver: WebhookReceiver,
    direct: list[tuple[str, int | None]],
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", "10.0.0.0/8, [::1], 127.0.0.0/8")
    send(tls_receiver.url(TOKEN))
    assert proxy.seen == []
    assert direct == [("127.0.0.1", tls_receiver.port)]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1:1")
    send(tls_receiver.url(TOKEN))
    assert proxy.seen == [("CONNECT", f"127.0.0.1:{tls_receiver.port}")]
    assert direct == [("127.0.0.1", tls_receiver.port)]
    assert tls_receiver.event_ids() == ["1", "1"]
