"""A small frame for long-running services: signals, READY, WATCHDOG and STOPPING.

A service's main loop is a function that takes a :class:`ServiceControl`. It calls
:meth:`ServiceControl.ready` once it can do its work, and waits with :meth:`ServiceControl.wait`
instead of ``time.sleep``: the wait returns at once on SIGTERM/SIGINT and sends ``WATCHDOG=1``
whenever half of ``$WATCHDOG_USEC`` has passed, so the watchdog proves the *main loop* is alive,
not merely the process. ``STOPPING=1`` is sent when the loop returns, however it returns.

Example::

    def body(control: ServiceControl) -> int:
        control.ready("waiting for work")
        while not control.wait(5.0):
            do_some_work()
        return 0

    raise SystemExit(run_service(body, name="falcon-worker"))
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from falcon.services import systemd

log = logging.getLogger(__name__)

__all__ = ["ServiceControl", "run_service"]


class ServiceControl:
    """What a service's loop uses to talk to the frame around it."""

    def __init__(self, name: str, stop_event: threading.Event | None = None) -> None:
        self.name = name
        self.stop_event = stop_event or threading.Event()
        self._interval = systemd.watchdog_interval()
        self._next_ping = time.monotonic()
        self.stop_reason: str | None = None
        self._stopping_sent = False

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self.stop_event.is_set()

    def request_stop(self, reason: str) -> None:
        """Ask the loop to finish (what SIGTERM does)."""
        if not self.stop_event.is_set():
            self.stop_reason = reason
            log.info("%s: %s, stopping", self.name, reason)
            self.stop_event.set()

    def ready(self, status: str | None = None) -> None:
        """Tell systemd the service is up (and send a first watchdog ping)."""
        systemd.notify_ready(status)
        self.ping(force=True)

    def stopping_now(self, status: str | None = None) -> None:
        """Send ``STOPPING=1`` (once) as soon as shutdown starts.

        systemd stops the watchdog when it hears this, so a long, graceful shutdown is not
        mistaken for a hang; :func:`run_service` sends it anyway when the loop returns.
        """
        if not self._stopping_sent:
            self._stopping_sent = True
            systemd.notify_stopping(status or self.stop_reason)

    def status(self, text: str) -> None:
        """Update the one-line status that ``systemctl status`` shows."""
        systemd.notify_status(text)

    def ping(self, *, force: bool = False) -> None:
        """Send ``WATCHDOG=1`` if the watchdog is on and a ping is due."""
        if self._interval is None:
            return
        now = time.monotonic()
        if force or now >= self._next_ping:
            systemd.notify_watchdog()
            self._next_ping = now + self._interval

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a stop, pinging the watchdog; True when stopping."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            self.ping()
            now = time.monotonic()
            if now >= deadline:
                return self.stop_event.is_set()
            step = deadline - now
            if self._interval is not None:
                step = min(step, max(self._next_ping - now, 0.0))
            if self.stop_event.wait(step):
                return True


def run_service(
    body: Callable[[ServiceControl], int | None],
    *,
    name: str,
    stop_event: threading.Event | None = None,
    install_signals: bool = True,
) -> int:
    """Run ``body`` as a service and return its exit code (0 when it returns None).

    SIGTERM and SIGINT set the stop event (a second SIGINT interrupts for real); signal handlers
    can only be installed from the main thread, so elsewhere they are skipped.
    """
    control = ServiceControl(name, stop_event)
    previous: dict[signal.Signals, Any] = {}
    if install_signals and threading.current_thread() is threading.main_thread():

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            control.request_stop(f"received {signal.Signals(signum).name}")
            # Give a person at a terminal a way out if shutdown hangs: the next Ctrl-C is real.
            signal.signal(signal.SIGINT, signal.default_int_handler)

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        code = body(control)
    finally:
        control.stopping_now()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if code is None else int(code)
