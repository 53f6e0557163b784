"""Notification channels: the dashboard, Slack and Discord incoming webhooks, and email (SMTP).

Every channel carries the alert's event id as an idempotency hint, because delivery is at least
once: in the text (``alert #42``), as ``Idempotency-Key``/``X-Falcon-Event-Id`` headers on
webhooks, and as the ``Message-ID`` of an email (mail clients fold duplicates with one id).

A failed send raises :class:`DeliveryFailed` with a message that never holds a secret: webhook
URLs carry their token in the path, so a URL is only ever shown as ``scheme://host``
(:func:`mask_url`), and :func:`scrub` removes any secret an underlying library put into its error
text anyway. ``permanent`` failures (a redirect or a 4xx other than 408/429, a webhook URL that is
malformed, a 5xx SMTP reply) are not retried.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import ipaddress
import json
import logging
import os
import re
import smtplib
import ssl
import threading
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol
from urllib.parse import SplitResult, unquote, urlsplit

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from falcon.alerts.settings import AlertSettings

__all__ = [
    "Channel",
    "DashboardChannel",
    "DeliveryFailed",
    "EmailChannel",
    "Notification",
    "WebhookChannel",
    "build_channels",
    "mask_url",
    "scrub",
]


@dataclass(frozen=True)
class Notification:
    """What a channel sends: one alert."""

    event_id: int
    message: str
    created_at: datetime
    ticker: str | None = None
    rule_id: int | None = None

    @property
    def text(self) -> str:
        """The message with its id, the idempotency hint a person can see."""
        return f"{self.message} (alert #{self.event_id})"


class DeliveryFailed(Exception):
    """A send failed; ``permanent`` ones are not retried; ``retry_after`` is the server's wish."""

    def __init__(self, message: str, *, permanent: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class Channel(Protocol):
    """A way out for alerts."""

    name: str

    def send(self, note: Notification) -> None:
        """Deliver ``note`` or raise :class:`DeliveryFailed`."""
        ...


def mask_url(url: str | None) -> str:
    """``scheme://host[:port]`` of ``url``: the part of a webhook URL that is not a secret.

    A host that is not one (a URL mangled so that its path runs into the host) shows as ``?``.
    """
    if not url:
        return "<unset>"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or "?"
    if not _SHOWN_HOST.fullmatch(host):
        host = "?"
    elif ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a number, or out of range: the host alone
        port = ""
    return f"{parts.scheme or '?'}://{host}{port}"


_SHOWN_HOST = re.compile(r"[\w.:%-]+")


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by a mask.

    A URL becomes :func:`mask_url`'s ``scheme://host:port``, and the parts of it that may hold a
    webhook's token (its path, its query, a password), as written or as httpx percent-encodes
    them, are masked wherever they appear on their own. Never raises, whatever the URL.
    """
    for secret in secrets:
        if not secret:
            continue
        if "://" not in secret:
            text = text.replace(secret, "***")
            continue
        text = text.replace(secret, mask_url(secret))
        for part, mask in _secret_parts(secret):
            text = text.replace(part, mask)
    return text


@functools.lru_cache(maxsize=64)
def _secret_parts(url: str) -> tuple[tuple[str, str], ...]:
    """What :func:`scrub` masks of ``url`` besides the whole: ``(text, mask)``, longest first."""
    start = url.index("://") + 3
    cut = min((i for i in (url.find(c, start) for c in "/?#") if i >= 0), default=len(url))
    authority, tail = url[start:cut], url[cut:]
    tails = {tail, tail.partition("#")[0]}
    with contextlib.suppress(Exception):  # what httpx sends (percent-encoded), if it parses
        tails.add(httpx.URL(url).raw_path.decode("ascii"))
    found: dict[str, str] = {}
    for piece in tails:
        path, _, query = piece.partition("#")[0].partition("?")
        if len(piece) > 1:
            found[piece] = "/***" if piece.startswith("/") else "***"
        if len(path) > 1:
            found[path] = "/***"
        if len(query) >= 4:  # shorter ones are no secret, and would mask half the text
            found[query] = "***"
    userinfo = authority.rpartition("@")[0]
    for piece in (userinfo, userinfo.partition(":")[2]):
        if len(piece) >= 4:
            found[piece] = "***"
    return tuple(sorted(found.items(), key=lambda item: len(item[0]), reverse=True))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class ConnectError(OSError):
    """The webhook host could not be reached (httpx's name for it: the same ``last_error``)."""


_SCHEMES = ("http", "https")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_PORT_PROBLEM = "its port is not a number in 1-65535"
_LONG_QUOTED = re.compile(r"'[^']{7,}'")


@dataclass(frozen=True)
class _Target:
    """Where a webhook URL points, parsed once, by httpx's rules, for both ways of sending."""

    https: bool
    host: str  # ASCII (IDNA-encoded); an IPv6 address without its brackets
    port: int | None
    path: str  # path and query, percent-encoded as httpx sends them

    @property
    def effective_port(self) -> int:
        return self.port or (443 if self.https else 80)


def _host_problem(host: str) -> str | None:
    """Why ``host`` (as httpx encoded it: ASCII, IPv6 without brackets) is not one, or None."""
    if ":" in host:
        try:
            ipaddress.ip_address(unquote(host))
        except ValueError:
            return "its host is not a valid IPv6 address"
        return None
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return "its host is not a valid host name"
    return None


def _parse_webhook_url(url: str) -> _Target | str:
    """The target of ``url``, or why nothing can be sent to it.

    The reason never quotes the URL's path or query (its secret), only what is wrong. A URL is
    usable when httpx can send to it (and then http.client sends the same bytes): http or https,
    a host, a port in 1-65535; a path with spaces or non-ASCII characters is percent-encoded,
    as httpx does, rather than refused.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "it is not a valid URL"
    if not parts.scheme:
        return "it has no scheme (it must start with https://)"
    if parts.scheme not in _SCHEMES:
        shown = f" {parts.scheme!r}" if len(parts.scheme) <= 10 else ""
        return f"its scheme{shown} is not http or https"
    if not parts.hostname:
        return "it has no host"
    if _bad_port(parts):
        return _PORT_PROBLEM
    try:
        parsed = httpx.URL(url)
        parsed.host  # noqa: B018 - decodes an "xn--" label: IDNAError when it is malformed
    except (httpx.InvalidURL, ValueError) as exc:  # ValueError: UnicodeError (IDNA)
        # Long quoted values left out: a host quoted there may be a mangled URL's path.
        reason = scrub(_LONG_QUOTED.sub("'...'", str(exc)), [url])
        return f"it is not a valid URL ({reason})"
    host = parsed.raw_host.decode("ascii")
    problem = _host_problem(host)
    if problem is not None:
        return problem
    if ":" in host:
        host = unquote(host)  # an IPv6 zone: fe80::1%25eth0 is fe80::1%eth0 to a socket
    return _Target(parts.scheme == "https", host, parsed.port,
                   parsed.raw_path.decode("ascii") or "/")


def _bad_port(parts: SplitResult) -> bool:
    """True when ``parts`` names a port that is not a number from 1 to 65535."""
    try:
        return parts.port == 0
    except ValueError:
        return True


def _proxy_problem(proxy: str) -> str | None:
    """Why the proxy URL ``proxy`` (``scheme://`` added already) cannot be used, or None.

    The reason never quotes the URL: it may hold a user and password.
    """
    try:
        parts = urlsplit(proxy)
    except ValueError:
        return "it cannot be parsed"
    if _bad_port(parts):
        return _PORT_PROBLEM
    if not parts.hostname:
        return "it has no host"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "it has a path (a '/', '?' or '#' in a password must be percent-encoded)"
    try:
        parsed = httpx.URL(proxy)
        parsed.host  # noqa: B018 - as for a webhook URL
    except (httpx.InvalidURL, ValueError):
        return "httpx cannot parse it"
    return _host_problem(parsed.raw_host.decode("ascii"))


def no_proxy_matches(no_proxy: str, host: str, port: int) -> bool:
    """True when ``NO_PROXY``'s value ``no_proxy`` names ``host:port`` (go straight there).

    curl's rules (CURLOPT_NOPROXY, which httpx says it follows): entries separated by commas;
    ``*`` matches every host (alone, or, as httpx reads it, anywhere in the list); a name
    matches the host itself and every host under it as a domain, case aside, leading and
    trailing dots aside (``example.com`` and ``.example.com`` both match ``example.com`` and
    ``hooks.example.com``, never ``notexample.com``; ``*.example.com`` is read as
    ``.example.com``); an IP address host is compared as an address, to IP entries only, which
    may be CIDR networks (``127.0.0.0/8``, ``fe80::/10``), IPv6 with or without brackets,
    never as a domain suffix (``0.0.1`` is not ``127.0.0.1``). An entry with a port
    (``example.com:8443``, ``[::1]:8080``), as httpx and urllib read it, matches that port
    only. Names are not resolved: ``localhost`` is not ``127.0.0.1``.
    """
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.rstrip(".")
    address = _ip_address(host)
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        name, entry_port = _no_proxy_entry(entry)
        if not name or (entry_port is not None and entry_port != port):
            continue
        if address is not None:
            network = _ip_network(name)
            if network is not None and address in network:
                return True
            continue
        if name.startswith("*."):
            name = name[1:]
        name = name.strip(".")
        if name and (host == name or host.endswith(f".{name}")):
            return True
    return False


def _no_proxy_entry(entry: str) -> tuple[str, int | None]:
    """A NO_PROXY entry's name (an IPv6 address without brackets) and port, if it has one."""
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0:
            return entry, None
        inner, rest = entry[1:end], entry[end + 1:]
        if not rest or rest.startswith("/"):
            return inner + rest, None
        number = rest[1:]
        if rest.startswith(":") and number.isascii() and number.isdigit():
            return inner, int(number)
        return entry, None
    name, colon, number = entry.rpartition(":")
    if colon and ":" not in name and number.isascii() and number.isdigit():
        return name, int(number)
    return entry, None  # no port, or an IPv6 address written without brackets


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


def _ip_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Proxy:
    """The proxy the environment names for a webhook: the variable, and its URL."""

    variable: str
    url: str  # with http:// added when the variable has no scheme, as httpx and curl do


def _environment_proxy(scheme: str, host: str, port: int) -> _Proxy | None:
    proxies = urllib.request.getproxies()
    key = scheme if proxies.get(scheme) else "all"
    value = proxies.get(key)
    if not value or no_proxy_matches(proxies.get("no", ""), host, port):
        return None
    return _Proxy(_variable_named(f"{key}_proxy", value),
                  value if "://" in value else f"http://{value}")


def _variable_named(wanted: str, value: str) -> str:
    """The environment variable urllib's ``getproxies`` took ``value`` from: ``http_proxy``
    before ``HTTP_PROXY`` (any case: ``Http_Proxy`` counts too)."""
    if os.environ.get(wanted) == value:
        return wanted
    for name, found in os.environ.items():
        if name.lower() == wanted and found == value:
            return name
    return wanted.upper()


class _HideWebhookUrls(logging.Filter):
    """Masks webhook URLs in the ``httpx`` logger's records.

    httpx logs every request at INFO with its whole URL, and a webhook URL's path is its token:
    ``falcon -v`` would print it to the journal for every proxied send. Only the URLs of
    webhook channels are masked; other users of httpx in the process log as before.
    """

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def add(self, url: str) -> None:
        # As given and as httpx prints it (it may normalise the URL, e.g. percent-encoding).
        self.urls.add(url)
        with contextlib.suppress(httpx.InvalidURL, ValueError):  # then httpx sends nothing
            self.urls.add(str(httpx.URL(url)))

    def filter(self, record: logging.LogRecord) -> bool:
        urls: list[str | None] = list(self.urls)
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg, urls)
        if isinstance(record.args, tuple):
            record.args = tuple(self._masked(arg, urls) for arg in record.args)
        return True

    @staticmethod
    def _masked(arg: object, urls: list[str | None]) -> object:
        if not isinstance(arg, str | httpx.URL):
            return arg
        text = str(arg)
        masked = scrub(text, urls)
        return arg if masked == text else masked


_hide_webhook_urls = _HideWebhookUrls()
_USERINFO = re.compile(r"//[^/@\s'\"]*@")


class WebhookChannel:
    """An incoming webhook taking ``{"<key>": text}`` (Slack: ``text``, Discord: ``content``).

    Sent with the standard library's ``http.client`` over kept-alive connections, one per
    concurrent send: a send costs about a quarter of the interpreter time it took through
    httpx, and the delivery worker's threads share the interpreter with the alert engine's
    ``on_bar`` (``falcon up``), whose latency every millisecond of theirs lengthens. When the
    environment names a proxy for the webhook's host (``HTTPS_PROXY``, ``ALL_PROXY`` ...,
    unless ``NO_PROXY`` names the host: :func:`no_proxy_matches`), httpx sends, through that
    proxy and no other (it does not read the environment again: one decision, one set of
    rules), as it speaks to proxies (absolute-URI requests for http://, a CONNECT tunnel for
    https://); both are read when the channel is built. Either way the URL is parsed once,
    by httpx's rules, and the same bytes are sent.

    Building a channel never fails, whatever the URL or the environment: that would take the
    worker, and its other channels, down with it. Instead each send fails with the reason:

    * a malformed webhook URL (no scheme, not http(s), no host, a bad port or host, a character
      httpx refuses) permanently: it does not heal, the alert is dead-lettered at once;
    * a malformed proxy variable, or a proxy httpx cannot use (``socks5://`` without the socks
      extra), retryably, naming the variable and never its value (it may hold a password):
      the operator fixes it and restarts. A send never falls back to a direct connection the
      environment did not ask for.
    """

    def __init__(self, name: str, url: str | None, *, key: str, timeout_s: float,
                 client: httpx.Client | None = None) -> None:
        self.name = name
        self._url = url
        self._key = key
        self._timeout = timeout_s
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._client = client
        self._proxy: str | None = None
        self._url_error: str | None = None
        self._proxy_error: str | None = None
        parsed = _parse_webhook_url(url) if url else None
        if isinstance(parsed, str):
            self._url_error = parsed
            parsed = None
        self._target = parsed
        proxy = None
        if parsed is not None:
            proxy = _environment_proxy("https" if parsed.https else "http", parsed.host,
                                       parsed.effective_port)
        if proxy is not None:
            self._proxy = proxy.url
            problem = _proxy_problem(proxy.url)
            if problem is not None:
                self._proxy_error = (f"{proxy.variable} is not a valid proxy URL ({problem}); "
                                     f"fix it, or name the host in NO_PROXY, and restart")
            elif client is None:
                self._client = self._proxied_client(proxy)
        if url and self._client is not None:
            # On every build, not at import: a logging.config call in between may have reset
            # the logger's filters (addFilter adds one filter once).
            logging.getLogger("httpx").addFilter(_hide_webhook_urls)
            _hide_webhook_urls.add(url)

    def _proxied_client(self, proxy: _Proxy) -> httpx.Client | None:
        """An httpx client sending through ``proxy`` (None, and the reason kept, if it can't).

        ``trust_env=False``: the proxy was chosen here; httpx must not choose again by its own
        reading of NO_PROXY (which fails on an entry like ``[::1]``), nor add ~/.netrc
        credentials. Certificates are verified as the direct way does (the system's store;
        ``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured by OpenSSL).
        """
        try:
            return httpx.Client(proxy=proxy.url, trust_env=False, timeout=self._timeout,
                                verify=ssl.create_default_context(), follow_redirects=False)
        except Exception as exc:  # ImportError: no socksio; ValueError: a scheme httpx lacks
            # httpx's text shows the proxy URL its own way ("u:[secure]@"): no userinfo.
            reason = _USERINFO.sub("//", scrub(f"{type(exc).__name__}: {exc}",
                                               [self._url, proxy.url]))
            self._proxy_error = (f"the proxy {mask_url(proxy.url)} named by {proxy.variable} "
                                 f"cannot be used: {reason}")
            return None

    def send(self, note: Notification) -> None:
        """POST the alert; DeliveryFailed on a network error or a non-2xx answer."""
        setting = f"FALCON_{self.name.upper()}_WEBHOOK_URL"
        if not self._url:
            raise DeliveryFailed(f"{self.name}: webhook URL is not configured (set {setting})")
        where = f"{self.name} {mask_url(self._url)}"
        target = self._target
        if target is None:  # the URL did not parse: self._url_error says why
            raise DeliveryFailed(f"{where}: the webhook URL is not usable: {self._url_error} "
                                 f"(not retried; fix {setting})", permanent=True)
        if self._proxy_error is not None:
            raise DeliveryFailed(f"{where}: {self._proxy_error}")
        headers = {"Idempotency-Key": f"falcon-alert-{note.event_id}",
                   "X-Falcon-Event-Id": str(note.event_id)}
        body = json.dumps({self._key: note.text}).encode()
        try:
            if self._client is not None:
                response = self._client.post(self._url, content=body, headers={
                    **headers, "Content-Type": "application/json"})
                code, retry_after = response.status_code, response.headers.get("retry-after")
            else:
                code, retry_after = self._post(target, body, headers)
        except (httpx.TimeoutException, TimeoutError):
            raise DeliveryFailed(f"{where}: timed out after {self._timeout:g}s") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, http.client.InvalidURL,
                UnicodeError) as exc:
            # Refused before anything was sent (the checks above should have caught it): a
            # URL that does not heal. The library's text is not kept: it may quote the URL.
            raise DeliveryFailed(f"{where}: the webhook URL is not usable: {type(exc).__name__} "
                                 f"(not retried; fix {setting})", permanent=True) from None
        except (httpx.HTTPError, OSError, http.client.HTTPException) as exc:
            # The proxy's URL too: it may carry a user and password.
            reason = scrub(str(exc) or type(exc).__name__, [self._url, self._proxy])
            raise DeliveryFailed(f"{where}: {type(exc).__name__}: {reason}") from None
        if 200 <= code < 300:
            return
        message = f"{where}: HTTP {code}"
        if code in (408, 429) or code >= 500:
            raise DeliveryFailed(message, retry_after=_retry_after(retry_after))
        raise DeliveryFailed(message + " (not retried)", permanent=True)

    def _post(self, target: _Target, body: bytes,
              headers: dict[str, str]) -> tuple[int, str | None]:
        """POST on a kept-alive connection (a new one if none is idle); status, Retry-After."""
        headers = {**headers, "Content-Type": "application/json", "User-Agent": "falcon"}
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        for reused in (conn is not None, False):
            if conn is None:
                conn = self._connect(target)
            try:
                conn.request("POST", target.path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                conn = None
                if reused:  # the host closed an idle kept-alive connection: a new one
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
            return response.status, response.getheader("Retry-After")
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self, target: _Target) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if target.https:
            conn = http.client.HTTPSConnection(target.host, target.port, timeout=self._timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(target.host, target.port, timeout=self._timeout)
        try:
            conn.connect()
        except TimeoutError:
            raise
        except OSError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from None
        return conn

    def close(self) -> None:
        """Close the HTTP connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if self._client is not None:
            self._client.close()


class EmailChannel:
    """Email over SMTP with smtplib: STARTTLS, implicit TLS (``ssl``) or plain, and login."""

    name = "email"

    def __init__(self, settings: AlertSettings) -> None:
        self._s = settings

    def _message(self, note: Notification) -> EmailMessage:
        msg = EmailMessage()
        first = note.message.splitlines()[0] if note.message else "alert"
        msg["Subject"] = f"[Falcon] {first[:120]}"
        msg["From"] = self._s.smtp_from
        msg["To"] = ", ".join(self._s.smtp_recipients)
        msg["Date"] = formatdate(note.created_at.timestamp(), usegmt=True)
        # The same id on every retry: mail clients show a duplicate once.
        msg["Message-ID"] = f"<falcon-alert-{note.event_id}@falcon.invalid>"
        msg["X-Falcon-Event-Id"] = str(note.event_id)
        msg.set_content(f"{note.text}\n\nsent at {note.created_at.isoformat()} by Falcon\n")
        return msg

    def send(self, note: Notification) -> None:
        """Send one email; DeliveryFailed (never with the password) on any SMTP or network error."""
        s = self._s
        if not (s.smtp_host and s.smtp_from and s.smtp_recipients):
            raise DeliveryFailed("email: smtp_host, smtp_from and smtp_to must be configured")
        where = f"email smtp://{s.smtp_host}:{s.smtp_port}"
        context = ssl.create_default_context()
        try:
            if s.smtp_tls == "ssl":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s, context=context
                )
            else:
                client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
            with client:
                client.ehlo()
                if s.smtp_tls == "starttls":
                    client.starttls(context=context)
                    client.ehlo()
                if s.smtp_user:
                    client.login(s.smtp_user, s.smtp_password or "")
                client.send_message(self._message(note))
        except smtplib.SMTPResponseException as exc:
            # 5xx is the server saying no for good (bad login, unknown recipient); 4xx: try later.
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(
                exc.smtp_error, bytes) else str(exc.smtp_error)
            reason = scrub(f"SMTP {exc.smtp_code} {text}".strip(), [s.smtp_password])
            raise DeliveryFailed(f"{where}: {reason}", permanent=exc.smtp_code >= 500) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryFailed(f"{where}: {exc}", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            kind = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            reason = scrub(str(exc), [s.smtp_password])
            raise DeliveryFailed(f"{where}: {kind}: {reason}".rstrip(": ")) from None


def build_channels(settings: AlertSettings) -> dict[str, Channel]:
    """The remote channels, built from ``settings`` (the dashboard needs none: see outbox)."""
    return {
        "slack": WebhookChannel("slack", settings.slack_webhook_url, key="text",
                                timeout_s=settings.http_timeout_s),
        "discord": WebhookChannel("discord", settings.discord_webhook_url, key="content",
                                  timeout_s=settings.http_timeout_s),
        "email": EmailChannel(settings),
    }


class DashboardChannel:
    """The live dashboard: an ``Event`` row of kind ``alert``.

    :func:`falcon.alerts.outbox.queue_alert` delivers this channel inside the alert's own
    transaction; this class only serves a dashboard delivery that was left pending (re-queued by
    hand, or written by another tool).
    """

    name = "dashboard"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def send(self, note: Notification) -> None:
        """Insert the Event row."""
        from falcon.db.models import Event

        payload = {"event_id": note.event_id, "rule_id": note.rule_id, "ticker": note.ticker,
                   "message": note.message, "created_at": note.created_at.isoformat()}
        with Session(self._engine) as session, session.begin():
            session.add(Event(kind="alert", payload=payload))
