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
* Sends run on a small thread pool per channel, ``send_concurrency`` at a time over the
  channel's pooled HTTP client, so a burst goes out together. The loop does not wait for a pass
  to finish before claiming again: a webhook hanging until its timeout holds up only its own
  rows, never another channel's, nor new alerts on its own channel beyond ``batch_size`` in
  flight. Finished sends are recorded ``sent`` together, one transaction for all that finished
  meanwhile.
* **Waking**: a new alert is picked up at once, not at the next poll: an alert engine in the same
  process wakes the worker right after its commit (:func:`falcon.alerts.outbox.add_waiter`);
  from another process, PostgreSQL NOTIFY wakes it, and on SQLite a cheap look at
  ``PRAGMA data_version`` every ``change_poll_s`` does. ``poll_interval_s`` is only the fallback.
  A pass first reads what is due and claims only that, so waking for nothing costs one read.
  Woken, it lets ``gather_s`` (20 ms) pass first: the alerts of one burst are claimed, and
  recorded sent, in one write each rather than two writes per alert taking turns with the alert
  engine for SQLite's write lock.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
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
                 rng: random.Random | None = None, in_process_wake: bool = True) -> None:
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
        # A pool per channel: a webhook hanging until its timeout ties up only its own threads.
        self._pools = {
            name: ThreadPoolExecutor(max_workers=max(1, settings.send_concurrency),
                                     thread_name_prefix=f"alert-{name}")
            for name in self.channels
        }
        self._inflight: dict[Future[bool], outbox.Claimed] = {}
        self._wake = threading.Event()
        self._in_process_wake = in_process_wake
        self._next_due: datetime | None = None
        #: Set while the PostgreSQL LISTEN connection is up.
        self.listening = threading.Event()
        self._secrets = [settings.slack_webhook_url, settings.discord_webhook_url,
                         settings.smtp_password]

    # --- one pass ----------------------------------------------------------------------------

    def run_once(self, *, event_id: int | None = None) -> int:
        """Claim what is due on every channel whose breaker allows it, send it; how many tried.

        Waits for this pass's sends (``falcon alerts test`` and the tests use it); :meth:`run`
        does not wait, it keeps claiming while sends are in flight.
        """
        claimed = self._claim(event_id)
        if not claimed:
            return 0
        wait(self._submit(claimed))
        self._reap()
        return len(claimed)

    def _claim(self, event_id: int | None = None) -> list[outbox.Claimed]:
        """Lease what is due: per channel, up to ``batch_size`` in flight, as its breaker allows.

        It reads first which channels have rows due (and when the next retry falls due), and
        claims only on those: an idle pass writes nothing, so it never queues behind, or holds
        up, the alert engine on SQLite's single write lock.
        """
        due = outbox.due_channels(self.engine, list(self.breakers))
        self._next_due = due.next_at
        busy = Counter(c.channel for c in self._inflight.values())
        claimed: list[outbox.Claimed] = []
        for name, count in due.now.items():
            room = self.settings.batch_size - busy[name]
            if room <= 0:
                continue
            breaker = self.breakers[name]
            allowed = breaker.allowance(room)
            if allowed == 0:
                continue
            rows = outbox.claim_due(self.engine, channels=[name], limit=min(allowed, count),
                                    lease_s=self.settings.claim_lease_s, event_id=event_id)
            if not rows and allowed == 1 and breaker.state == "half_open":
                breaker.unclaimed_probe()
            claimed.extend(rows)
        return claimed

    def _submit(self, claimed: list[outbox.Claimed]) -> list[Future[bool]]:
        # All of a burst goes out at once (send_concurrency per channel over its pooled client).
        futures = []
        for c in claimed:
            future = self._pools[c.channel].submit(self._deliver, c)
            self._inflight[future] = c
            future.add_done_callback(self._sent_one)
            futures.append(future)
        return futures

    def _sent_one(self, _future: Future[bool]) -> None:
        self._wake.set()  # the loop records it (one write for all that finished meanwhile)

    def _reap(self) -> None:
        """Record the sends that finished since the last look, in one transaction."""
        done = [f for f in list(self._inflight) if f.done()]
        if not done:
            return
        sent = [self._inflight[f] for f in done if f.result()]
        outbox.mark_sent(self.engine, sent)
        for f in done:
            del self._inflight[f]
        for c in sent:
            log.info("alert %s delivered to %s (try %s)", c.event_id, c.channel, c.attempt)

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
            # The traceback scrubbed as the error is: a library's text may quote the URL.
            trace = scrub("".join(traceback.format_exception(exc)), self._secrets)
            log.error("alert delivery %s (%s): unexpected error\n%s", c.id, c.channel,
                      trace.rstrip())
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

    def _woken_in_process(self) -> None:
        self.stats["woken_in_process"] += 1
        self._wake.set()

    def run(self, stop: threading.Event, ping: Callable[[], Any] | None = None) -> None:
        """Deliver until ``stop`` is set, calling ``ping()`` every pass (the service's watchdog).

        Between passes it sleeps until the first of: an alert queued in this process (the
        outbox wakes it right after the commit), a NOTIFY on PostgreSQL, a commit by any process
        on SQLite (``PRAGMA data_version``, read every ``change_poll_s``), the next retry falling
        due, or ``poll_interval_s``. Each way out is counted in :attr:`stats`. It then waits
        ``gather_s`` more, so that the alerts of a burst are claimed, and recorded sent,
        together.
        """
        listener = None
        changes = None
        if self.engine.dialect.name == "postgresql":
            listener = threading.Thread(target=self._listen, args=(stop,), daemon=True,
                                        name="alert-listen")
            listener.start()
        elif self.engine.dialect.name == "sqlite":
            changes = _SqliteChanges(self.engine)
        if self._in_process_wake:
            outbox.add_waiter(self.engine, self._woken_in_process)
        try:
            while not stop.is_set():
                if ping is not None:
                    ping()
                # Cleared before the pass: a wake that lands during the pass is not lost.
                self._wake.clear()
                self._reap()
                if self._submit(self._claim()):
                    continue
                self._sleep(stop, changes)
                if self.settings.gather_s > 0:
                    stop.wait(self.settings.gather_s)
            # Stopping: no new claims; the sends in flight finish (each bounded by its timeout).
            wait(list(self._inflight))
            self._reap()
        finally:
            if self._in_process_wake:
                outbox.remove_waiter(self.engine, self._woken_in_process)
            if changes is not None:
                changes.close()
            self.close()

    def _sleep(self, stop: threading.Event, changes: _SqliteChanges | None) -> None:
        timeout = self.settings.poll_interval_s
        if self._next_due is not None:
            timeout = min(timeout, max(0.0, (self._next_due - utcnow()).total_seconds()))
        self.stats["sleeps"] += 1
        if changes is None:
            self._wake.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        step = max(0.001, self.settings.change_poll_s)
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._wake.wait(min(step, left)):
                return
            if changes.changed():
                self.stats["woken_by_change"] += 1
                return

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
                    self.listening.set()
                    # A pass after (re)connecting: what was queued while not listening.
                    self._wake.set()
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.stats["woken_by_notify"] += 1
                            self._wake.set()
            except psycopg.Error as exc:
                log.warning("LISTEN %s failed (%s); polling", outbox.ALERTS_CHANNEL,
                            type(exc).__name__)
                self.listening.clear()
                stop.wait(5.0)

    def close(self) -> None:
        """Wait for sends in flight (each is bounded by its timeout) and close connections."""
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        for channel in self.channels.values():
            closer = getattr(channel, "close", None)
            if callable(closer):
                closer()


class _SqliteChanges:
    """Tells whether any connection committed to a SQLite database since the last look.

    ``PRAGMA data_version`` on one connection kept for the purpose changes whenever another
    connection (in any process) commits; reading it costs microseconds and takes no lock, so the
    worker can look every few milliseconds, and run a pass only when something was written.
    """

    def __init__(self, engine: Engine) -> None:
        self._conn = engine.raw_connection()
        self._last = self._version()

    def _version(self) -> int:
        cur = self._conn.cursor()
        try:
            cur.execute("PRAGMA data_version")
            row = cur.fetchone()
        finally:
            cur.close()
        return int(row[0]) if row else 0

    def changed(self) -> bool:
        """True when a commit happened since the last call."""
        now = self._version()
        changed, self._last = now != self._last, now
        return changed

    def close(self) -> None:
        """Give the connection back."""
        self._conn.close()
