"""Notification channels: the dashboard, Slack and Discord incoming webhooks, and email (SMTP).

Every channel carries the alert's event id as an idempotency hint, because delivery is at least
once: in the text (``alert #42``), as ``Idempotency-Key``/``X-Falcon-Event-Id`` headers on
webhooks, and as the ``Message-ID`` of an email (mail clients fold duplicates with one id).

A failed send raises :class:`DeliveryFailed` with a message that never holds a secret: webhook
URLs carry their token in the path, so a URL is only ever shown as ``scheme://host``
(:func:`mask_url`), and :func:`scrub` removes any secret an underlying library put into its error
text anyway. ``permanent`` failures (a 4xx other than 408/429, a 5xx SMTP reply) are not retried.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import smtplib
import ssl
import threading
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol
from urllib.parse import urlsplit

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
    """``scheme://host[:port]`` of ``url``: the part of a webhook URL that is not a secret."""
    if not url:
        return "<unset>"
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme or '?'}://{host}{port}"


def scrub(text: str, secrets: list[str | None]) -> str:
    """``text`` with every secret (and a webhook URL's path) replaced by a mask."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, mask_url(secret) if "://" in secret else "***")
        path = urlsplit(secret).path if "://" in secret else ""
        if len(path) > 1:
            text = text.replace(path, "/***")
    return text


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class ConnectError(OSError):
    """The webhook host could not be reached (httpx's name for it: the same ``last_error``)."""


def environment_proxy(scheme: str, host: str) -> str | None:
    """The proxy the environment names for ``scheme://host``, or None to connect directly.

    The variables httpx reads, read the same way (urllib's ``getproxies``: ``http_proxy``
    before ``HTTP_PROXY``, ``ALL_PROXY`` for any scheme without its own, ``NO_PROXY``), so that
    a host sent through http.client is one httpx would not have proxied either. Read when
    called, not at import: a worker started after the proxy was configured uses it.
    """
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy


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
        with contextlib.suppress(httpx.InvalidURL):  # then httpx sends nothing to log either
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
    environment names a proxy for the webhook's host (:func:`environment_proxy`: ``HTTPS_PROXY``,
    ``ALL_PROXY`` ..., unless ``NO_PROXY`` names the host), httpx sends, as it speaks to
    proxies (absolute-URI requests for http://, a CONNECT tunnel for https://); both are read
    when the channel is built. A proxy httpx cannot use (``socks5://`` without the socks extra)
    fails each send with the reason rather than the channel's construction, which would take
    the worker's other channels down with it, and never falls back to a direct connection the
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
        parts = urlsplit(url or "")
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._proxy = environment_proxy(parts.scheme, self._host) if url else None
        self._proxy_error: str | None = None
        if client is None and self._proxy is not None:
            try:
                self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)
            except (ImportError, ValueError) as exc:  # no socksio; a scheme httpx lacks
                # httpx's text shows the proxy URL its own way ("u:[secure]@"): no userinfo.
                reason = _USERINFO.sub("//", scrub(f"{type(exc).__name__}: {exc}",
                                                   [url, self._proxy]))
                self._proxy_error = (f"the proxy {mask_url(self._proxy)} named by the "
                                     f"environment cannot be used: {reason}")
        if url and self._client is not None:
            # On every build, not at import: a logging.config call in between may have reset
            # the logger's filters (addFilter adds one filter once).
            logging.getLogger("httpx").addFilter(_hide_webhook_urls)
            _hide_webhook_urls.add(url)

    def send(self, note: Notification) -> None:
        """POST the alert; DeliveryFailed on a network error or a non-2xx answer."""
        if not self._url:
            raise DeliveryFailed(f"{self.name}: webhook URL is not configured "
                                 f"(set FALCON_{self.name.upper()}_WEBHOOK_URL)")
        where = f"{self.name} {mask_url(self._url)}"
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
                code, retry_after = self._post(body, headers)
        except (httpx.TimeoutException, TimeoutError):
            raise DeliveryFailed(f"{where}: timed out after {self._timeout:g}s") from None
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

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
        """POST on a kept-alive connection (a new one if none is idle); status, Retry-After."""
        headers = {**headers, "Content-Type": "application/json", "User-Agent": "falcon"}
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        for reused in (conn is not None, False):
            if conn is None:
                conn = self._connect()
            try:
                conn.request("POST", self._target, body=body, headers=headers)
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

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
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
