"""The sd_notify protocol, spoken directly over ``$NOTIFY_SOCKET`` (no libsystemd needed).

systemd passes a ``Type=notify`` service the path of an ``AF_UNIX`` datagram socket in
``$NOTIFY_SOCKET``; a leading ``@`` means a Linux abstract socket. Each datagram is newline
separated ``KEY=VALUE`` lines (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...``).
When the variable is unset (a terminal, a test, single-node mode) every call is a silent no-op,
and a failure to send is logged, never raised: a service must not die because its supervisor went
away.

Example::

    from falcon.services import systemd

    systemd.notify_ready("waiting for jobs")
    interval = systemd.watchdog_interval()   # seconds between WATCHDOG=1 pings, or None
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

__all__ = [
    "notify",
    "notify_ready",
    "notify_status",
    "notify_stopping",
    "notify_watchdog",
    "watchdog_interval",
]


def _address(raw: str) -> str | None:
    """The socket address for ``raw`` ($NOTIFY_SOCKET), or None when we cannot speak to it."""
    if raw.startswith("@"):
        # Abstract namespace: the kernel name starts with a NUL byte instead of '@'.
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    # systemd 254+ may also hand out "vsock:CID:PORT" (VMs); not a case Falcon's nodes meet.
    log.debug("NOTIFY_SOCKET %r is not a unix socket address; not notifying", raw)
    return None


def notify(state: str | Mapping[str, object], *, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` to the service manager; True when a datagram was sent.

    ``state`` is either the raw text (``"READY=1\\nSTATUS=up"``) or a mapping of fields.
    """
    env = os.environ if environ is None else environ
    raw = env.get("NOTIFY_SOCKET")
    if not raw:
        return False
    address = _address(raw)
    if address is None:
        return False
    if isinstance(state, Mapping):
        text = "\n".join(f"{key}={value}" for key, value in state.items())
    else:
        text = state
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block: a datagram socket whose reader is slow blocks the sender once its queue
            # is full, and a status message is not worth a hung service (or a missed SIGTERM).
            sock.setblocking(False)
            sock.connect(address)
            sock.send(text.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", raw, exc)
        return False
    return True


def notify_ready(status: str | None = None) -> bool:
    """Tell systemd the service finished starting (``READY=1``, optionally with a STATUS)."""
    fields: dict[str, object] = {"READY": 1}
    if status:
        fields["STATUS"] = status
    return notify(fields)


def notify_watchdog() -> bool:
    """Keep-alive ping for ``WatchdogSec=`` (``WATCHDOG=1``)."""
    return notify("WATCHDOG=1")


def notify_stopping(status: str | None = None) -> bool:
    """Tell systemd the service is shutting down (``STOPPING=1``)."""
    fields: dict[str, object] = {"STOPPING": 1}
    if status:
        fields["STATUS"] = status
    return notify(fields)


def notify_status(status: str) -> bool:
    """A one-line status shown by ``systemctl status`` (``STATUS=...``)."""
    # A newline would start a new KEY=VALUE field; keep the status one line.
    return notify({"STATUS": " ".join(status.splitlines())})


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or None when not watched.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for; a child that inherited
    the environment must not ping on its parent's behalf.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer; watchdog pings disabled", usec)
        return None
    if value <= 0:
        return None
    return value / 1_000_000 / 2
