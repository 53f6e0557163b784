"""The delivery worker: claims due outbox rows, sends them, and records the outcome.

* **Retries** follow :func:`backoff_delay`: exponential from ``backoff_base_s``, capped at
  ``backoff_cap_s``, with "equal jitter" (a delay in ``[d/2, d]``), so that many alerts failing
  together do not all come back in the same second. A ``Retry-After`` from the server is honoured
  up to the cap. After ``max_attempts`` (per channel) the row is dead-lettered: ``status='dead'``
  with ``last_error``; ``falcon alerts deliveries --status dead`` lists them, ``--retry`` revives
  them.
* **Circuit breaker**, one per channel: after ``breaker_threshold`` consecutive failures the channel
  opens for ``breaker_cooloff_s``. While open its rows are not claimed at all: they wait, their
  attempts are not spent, nothing is lost. After the cool-off one row is tried (half-open); success
  closes the breaker, failure opens it again. The breaker lives in the worker's memory: a restart
  starts closed, which costs at most one more failed try.
* Sends run on a small thread pool, so a hanging webhook (up to its timeout) does not hold up the
  other channels.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from falcon.alerts import outbox
from falcon.alerts.channels import Channel, DashboardChannel, DeliveryFailed, Notification, scrub
from falcon.alerts.settings import AlertSettings, RetryPolicy
from falcon.db.types import utcnow

log = logging.getLogger(__name__)

__all__ = ["CircuitBreaker", "DeliveryWorker", "backoff_delay"]


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed try number ``attempt`` (1-based): in [d/2, d], d capped."""
    exponent = min(max(attempt, 1) - 1, 1000)  # 2.0**1024 would overflow a float
    ceiling = min(policy.backoff_cap_s, policy.backoff_base_s * 2.0**exponent)
    draw = (rng or random).random()
    # Clamped: with tiny floats the sum could round a hair outside [d/2, d].
    return min(ceiling, max(ceiling / 2, ceiling / 2 + draw * ceiling / 2))


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open after ``cooloff_s``."""

    def __init__(self, threshold: int, cooloff_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, threshold)
        self.cooloff_s = cooloff_s
        self._clock = clock
        self._lock = threading.Lock()
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False
        self.times_opened = 0

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self._clock() - self.opened_at >= self.cooloff_s:
            return "half_open"
        return "open"

    def allowance(self, batch: int) -> int:
        """How many sends may start now: ``batch`` closed, one probe half-open, none open."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return batch
            if state == "half_open" and not self._probing:
                self._probing = True
                return 1
            return 0

    def unclaimed_probe(self) -> None:
        """The probe slot found nothing to send: give it back."""
        with self._lock:
            self._probing = False

    def success(self) -> None:
        """A send worked: close."""
        with self._lock:
            self.failures = 0
            self.opened_at = None
            self._probing = False

    def failure(self) -> None:
        """A send failed: count it; open (again) at the threshold or after a failed probe."""
        with self._lock:
            self.failures += 1
            if self._probing or self.failures >= self.threshold:
                if self.opened_at is None or self._probing:
                    self.times_opened += 1
                self.opened_at = self._clock()
                self._probing = False


class DeliveryWorker:
    """Sends pending deliveries until stopped; one per node is plenty (several are safe)."""

    def __init__(self, engine: Engine, settings: AlertSettings, *,
                 channels: dict[str, Channel] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        from falcon.alerts.channels import build_channels

        self.engine = engine
        self.settings = settings
        self.channels: dict[str, Channel] = dict(channels or build_channels(settings))
        self.channels.setdefault("dashboard", DashboardChannel(engine))
        self.breakers = {
            name: CircuitBreaker(settings.breaker_threshold, settings.breaker_cooloff_s, clock)
            for name in self.channels
        }
        self.stats: Counter[str] = Counter()
        self._rng = rng or random.Random()  # noqa: S311 - jitter
        self._pool = ThreadPoolExecutor(max_workers=max(1, settings.send_concurrency),
                                        thread_name_prefix="alert-send")
        self._wake = threading.Event()
        self._secrets = [settings.slack_webhook_url, settings.discord_webhook_url,
                         settings.smtp_password]

    # --- one pass ----------------------------------------------------------------------------

    def run_once(self, *, event_id: int | None = None) -> int:
        """Claim what is due on every channel whose breaker allows it, send it; how many tried."""
        claimed: list[outbox.Claimed] = []
        for name, breaker in self.breakers.items():
            allowed = breaker.allowance(self.settings.batch_size)
            if allowed == 0:
                continue
            rows = outbox.claim_due(self.engine, channels=[name], limit=allowed,
                                    lease_s=self.settings.claim_lease_s, event_id=event_id)
            if not rows and allowed == 1 and breaker.state == "half_open":
                breaker.unclaimed_probe()
            claimed.extend(rows)
        if not claimed:
            return 0
        futures = [self._pool.submit(self._deliver, c) for c in claimed]
        sent = [c for c, f in zip(claimed, futures, strict=True) if f.result()]
        outbox.mark_sent(self.engine, sent)
        for c in sent:
            log.info("alert %s delivered to %s (try %s)", c.event_id, c.channel, c.attempt)
        return len(claimed)

    def _deliver(self, c: outbox.Claimed) -> bool:
        """Send one; True when sent (recorded by the caller), failures recorded here."""
        channel = self.channels.get(c.channel)
        breaker = self.breakers[c.channel]
        note = Notification(c.event_id, c.message, c.created_at, c.ticker, c.rule_id)
        try:
            if channel is None:
                raise DeliveryFailed(f"unknown channel {c.channel!r}", permanent=True)
            channel.send(note)
        except DeliveryFailed as exc:
            self._failed(c, scrub(str(exc), self._secrets), exc.permanent, exc.retry_after)
            if not exc.permanent:
                breaker.failure()
            return False
        except Exception as exc:  # a bug in a channel must not kill the worker or lose the row
            log.exception("alert delivery %s (%s): unexpected error", c.id, c.channel)
            self._failed(c, scrub(f"{type(exc).__name__}: {exc}", self._secrets), False, None)
            breaker.failure()
            return False
        breaker.success()
        self.stats["sent"] += 1
        return True

    def _failed(self, c: outbox.Claimed, error: str, permanent: bool,
                retry_after: float | None) -> None:
        policy = self.settings.policy(c.channel)
        retry_at: datetime | None = None
        if not permanent and c.attempt < policy.max_attempts:
            delay = backoff_delay(c.attempt, policy, self._rng)
            if retry_after is not None:
                delay = min(max(delay, retry_after), policy.backoff_cap_s)
            retry_at = utcnow() + timedelta(seconds=delay)
        outbox.mark_failed(self.engine, c, error, retry_at=retry_at)
        self.stats["dead" if retry_at is None else "retry"] += 1
        log.warning("alert %s to %s failed (try %s/%s)%s: %s", c.event_id, c.channel, c.attempt,
                    policy.max_attempts, "" if retry_at else ", dead-lettered", error)

    # --- the loop ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Make an idle :meth:`run` look for work now."""
        self._wake.set()

    def run(self, stop: threading.Event, ping: Callable[[], Any] | None = None) -> None:
        """Deliver until ``stop`` is set, calling ``ping()`` every pass (the service's watchdog)."""
        listener = None
        if self.engine.dialect.name == "postgresql":
            listener = threading.Thread(target=self._listen, args=(stop,), daemon=True,
                                        name="alert-listen")
            listener.start()
        try:
            while not stop.is_set():
                if ping is not None:
                    ping()
                if self.run_once():
                    continue
                self._wake.wait(self.settings.poll_interval_s)
                self._wake.clear()
        finally:
            self.close()

    def _listen(self, stop: threading.Event) -> None:
        """LISTEN for new alerts on PostgreSQL and wake the loop; polling covers any gap."""
        import psycopg

        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        while not stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {outbox.ALERTS_CHANNEL}")
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake.set()
            except psycopg.Error as exc:
                log.warning("LISTEN %s failed (%s); polling", outbox.ALERTS_CHANNEL,
                            type(exc).__name__)
                stop.wait(5.0)

    def close(self) -> None:
        """Wait for sends in flight (each is bounded by its timeout) and close connections."""
        self._pool.shutdown(wait=True)
        for channel in self.channels.values():
            closer = getattr(channel, "close", None)
            if callable(closer):
                closer()
