"""The worker: claims jobs from the queue and runs their handlers.

One :class:`Worker` runs ``concurrency`` slots (threads), each claiming and running one job at a
time. While a job runs, a ticker heartbeats it every ``heartbeat_interval`` seconds, and the
handler's progress reports are written through as well (at most about once a second). Workers
reap jobs whose heartbeat is older than ``stale_after`` (their worker died) back into the queue.

Idle slots wake on ``NOTIFY falcon_jobs`` on PostgreSQL (one LISTEN connection per worker) and
poll every ``poll_interval`` seconds anyway, which is all SQLite gets.

Stopping (SIGTERM, or the ``stop`` event): no new jobs are claimed; running jobs get ``grace``
seconds to finish, then they are released back to the queue without using up an attempt, and the
worker returns. A handler learns it must stop when its progress callback raises
:class:`~falcon.jobs.queue.JobCancelled`.

Delivery is at least once: a job whose worker dies (or loses the database) after doing the work
but before recording it runs again, so handlers must be safe to repeat (write results keyed by
the job, not appended blindly).

Example::

    stop = threading.Event()
    thread = start_in_thread(engine, stop)   # single-node mode, inside another process
    ...
    stop.set(); thread.join()
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from falcon.errors import FalconError, ValidationError
from falcon.jobs import queue
from falcon.jobs.queue import ClaimedJob, JobCancelled
from falcon.jobs.registry import HandlerImportError, HandlerRegistry, UnknownJobKind, registry
from falcon.services.loop import ServiceControl

log = logging.getLogger(__name__)

__all__ = ["Worker", "WorkerConfig", "WorkerStats", "default_worker_id", "start_in_thread"]


def default_worker_id() -> str:
    """``host:pid``: unique across the cluster and readable in ``falcon jobs list``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker behaves; every interval is in seconds."""

    worker_id: str = field(default_factory=default_worker_id)
    concurrency: int = 1
    poll_interval: float = 2.0
    heartbeat_interval: float = 5.0
    stale_after: float = 60.0
    grace: float = 30.0
    once: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValidationError(f"concurrency must be at least 1, got {self.concurrency}")
        if min(self.poll_interval, self.heartbeat_interval, self.stale_after) <= 0:
            raise ValidationError("poll, heartbeat and stale-after intervals must be positive")
        if self.grace < 0:
            raise ValidationError(f"grace must be >= 0, got {self.grace}")
        if self.heartbeat_interval * 2 > self.stale_after:
            # Otherwise one late heartbeat gets a healthy job reaped from under its worker.
            raise ValidationError(
                f"heartbeat interval ({self.heartbeat_interval}s) must be at most half of "
                f"stale-after ({self.stale_after}s)"
            )

    def slot_ids(self) -> list[str]:
        """The worker id each slot claims under."""
        if self.concurrency == 1:
            return [self.worker_id]
        return [f"{self.worker_id}/{i + 1}" for i in range(self.concurrency)]


@dataclass
class WorkerStats:
    """What a worker did since it started."""

    done: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    lost: int = 0
    reaped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def summary(self) -> str:
        return (f"{self.done} done, {self.failed} failed, {self.retried} retried, "
                f"{self.released} released, {self.reaped} reaped")


class _JobProgress:
    """The :class:`~falcon.jobs.registry.Progress` callback given to a handler."""

    def __init__(self, engine: Engine, job: ClaimedJob, abort: threading.Event,
                 min_write_interval: float) -> None:
        self.job_id = job.id
        self.worker_id = job.worker
        self.attempt = job.attempt
        self._engine = engine
        self._job = job
        self._abort = abort
        self._min_interval = min_write_interval
        self._lock = threading.Lock()
        self._fraction: float | None = None
        self._note: str | None = None
        self._last_write = time.monotonic()
        self.lost = False

    @property
    def stopping(self) -> bool:
        return self.lost or self._abort.is_set()

    def __call__(self, fraction: float | None = None, note: str | None = None) -> None:
        with self._lock:
            if fraction is not None:
                self._fraction = fraction
            if note is not None:
                self._note = note
            due = time.monotonic() - self._last_write >= self._min_interval
        if due:
            self.beat()
        if self._abort.is_set():
            raise JobCancelled(f"job {self.job_id} released: worker {self.worker_id} is stopping")
        if self.lost:
            raise JobCancelled(f"job {self.job_id} was cancelled or taken over by another worker")

    def beat(self) -> None:
        """Write the heartbeat and the latest progress now."""
        with self._lock:
            fraction, note = self._fraction, self._note
            self._last_write = time.monotonic()
        try:
            if not queue.heartbeat(self._engine, self._job, fraction, note):
                self.lost = True
        except SQLAlchemyError as exc:
            # A database hiccup: keep working; the next beat may get through before the timeout.
            log.warning("job %s: heartbeat failed: %s", self.job_id, exc)


class Worker:
    """Runs jobs from the queue until stopped (or, with ``once``, until the queue is empty).

    One instance runs once: call :meth:`run` a single time.
    """

    #: Seconds cooperative handlers get, after the grace period, to give their jobs back.
    abort_wait = 2.0

    def __init__(self, engine: Engine, config: WorkerConfig | None = None,
                 handlers: HandlerRegistry | None = None) -> None:
        self.engine = engine
        self.config = config or WorkerConfig()
        self.handlers = handlers or registry
        self.stats = WorkerStats()
        self._halt = threading.Event()  # slots stop claiming (set when `stop` is)
        self._abort = threading.Event()  # running handlers must give their jobs back
        self._wake = threading.Condition()
        self._generation = 0
        self._current: dict[str, ClaimedJob] = {}
        self._current_lock = threading.Lock()

    # --- waking ------------------------------------------------------------------------------

    def _wake_all(self) -> None:
        with self._wake:
            self._generation += 1
            self._wake.notify_all()

    def _idle(self, stop: threading.Event, seen_generation: int) -> None:
        with self._wake:
            if self._generation == seen_generation and not stop.is_set():
                self._wake.wait(self.config.poll_interval)

    def _listen(self, stop: threading.Event) -> None:
        """LISTEN for submitted jobs on PostgreSQL and wake idle slots; reconnects on errors."""
        import psycopg

        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        while not stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {queue.CHANNEL}")
                    self._wake_all()  # anything submitted while we were not listening
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake_all()
            except psycopg.Error as exc:
                log.warning("LISTEN %s failed (%s); polling until it reconnects",
                            queue.CHANNEL, exc)
                stop.wait(max(self.config.poll_interval, 5.0))

    # --- running jobs ------------------------------------------------------------------------

    def run_one(self, worker_id: str | None = None) -> bool:
        """Claim and run one job; False when nothing was queued."""
        job = queue.claim(self.engine, worker_id or self.config.slot_ids()[0])
        if job is None:
            return False
        self._execute(job)
        return True

    def _execute(self, job: ClaimedJob) -> None:
        log.info("job %s (%s) attempt %s/%s started on %s",
                 job.id, job.kind, job.attempt, job.max_attempts, job.worker)
        try:
            handler = self.handlers.resolve(job.kind)
        except (UnknownJobKind, HandlerImportError) as exc:
            # A deployment problem, not a transient one: retrying cannot help.
            queue.fail(self.engine, job, str(exc), retry=False)
            self.stats.add("failed")
            log.error("job %s failed: %s", job.id, exc)
            return
        progress = _JobProgress(self.engine, job, self._abort,
                                min(1.0, self.config.heartbeat_interval))
        finished = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(progress, finished),
                                  name=f"heartbeat-{job.id}", daemon=True)
        with self._current_lock:
            self._current[job.worker] = job
        ticker.start()
        try:
            self._run_handler(job, handler, progress)
        finally:
            finished.set()
            ticker.join()
            with self._current_lock:
                self._current.pop(job.worker, None)

    def _tick(self, progress: _JobProgress, finished: threading.Event) -> None:
        while not finished.wait(self.config.heartbeat_interval):
            progress.beat()

    def _run_handler(self, job: ClaimedJob, handler: Callable[..., Any],
                     progress: _JobProgress) -> None:
        try:
            result = handler(dict(job.payload), progress)
        except JobCancelled as exc:
            if self._abort.is_set() and queue.release(self.engine, job):
                self.stats.add("released")
                log.info("job %s released for another worker", job.id)
            else:
                self.stats.add("lost")
                log.info("job %s stopped: %s", job.id, exc)
            return
        except FalconError as exc:
            self._record_failure(job, str(exc))
            return
        except Exception as exc:
            log.exception("job %s (%s) raised", job.id, job.kind)
            self._record_failure(job, f"{type(exc).__name__}: {exc}")
            return
        if result is not None and not isinstance(result, dict):
            result = {"value": result}
        try:
            ok = queue.complete(self.engine, job, result)
        except ValidationError as exc:
            self._record_failure(job, str(exc), retry=False)
            return
        if ok:
            self.stats.add("done")
            log.info("job %s done", job.id)
        else:
            self.stats.add("lost")
            log.warning("job %s finished but was no longer ours (cancelled or reaped)", job.id)

    def _record_failure(self, job: ClaimedJob, error: str, *, retry: bool = True) -> None:
        status = queue.fail(self.engine, job, error.splitlines()[0] if error else "failed",
                            retry=retry)
        self.stats.add({"queued": "retried", "failed": "failed", "lost": "lost"}[status])
        log.warning("job %s attempt %s failed (%s): %s", job.id, job.attempt, status, error)

    # --- loops -------------------------------------------------------------------------------

    def _slot(self, worker_id: str, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._wake:
                generation = self._generation
            try:
                if self.run_one(worker_id):
                    continue
            except SQLAlchemyError as exc:
                log.warning("%s: database error, retrying in %.0fs: %s",
                            worker_id, self.config.poll_interval, exc)
                stop.wait(self.config.poll_interval)
                continue
            except Exception:
                # Handler errors never get here; this is the worker's own bug. Keep the slot
                # alive (a dead slot would quietly shrink the worker) and say so loudly.
                log.exception("%s: unexpected error in the worker loop", worker_id)
                stop.wait(self.config.poll_interval)
                continue
            if self.config.once:
                return
            self._idle(stop, generation)

    def _reap(self) -> None:
        try:
            n = queue.reap_stale(self.engine, self.config.stale_after)
        except SQLAlchemyError as exc:
            log.warning("reaping stale jobs failed: %s", exc)
            return
        if n:
            self.stats.add("reaped", n)
            log.warning("re-queued %s job(s) whose worker stopped heartbeating", n)
            self._wake_all()

    def run(self, stop: threading.Event, control: ServiceControl | None = None) -> WorkerStats:
        """Run until ``stop`` is set (or the queue is empty with ``once``); the stats."""
        cfg = self.config
        self._reap()
        if self.engine.dialect.name == "postgresql" and not cfg.once:
            threading.Thread(target=self._listen, args=(self._halt,), name="jobs-listen",
                             daemon=True).start()
        # Slot threads are daemons so that an uncooperative handler cannot keep the process
        # alive after its job was released at shutdown.
        slots = [threading.Thread(target=self._slot, args=(wid, self._halt), name=f"slot-{wid}",
                                  daemon=True) for wid in cfg.slot_ids()]
        for thread in slots:
            thread.start()
        if control is not None:
            control.ready(f"{cfg.worker_id}: {cfg.concurrency} slot(s), waiting for jobs")
        reap_every = max(cfg.poll_interval, cfg.stale_after / 2)
        next_reap = time.monotonic() + reap_every
        status = ""
        tick = min(cfg.poll_interval, 1.0)
        while any(t.is_alive() for t in slots):
            stopping = control.wait(tick) if control is not None else stop.wait(tick)
            if stopping:
                break
            if time.monotonic() >= next_reap:
                self._reap()
                next_reap = time.monotonic() + reap_every
            now_status = f"{len(self._current)} running, {self.stats.summary()}"
            if control is not None and now_status != status:
                control.status(now_status)
                status = now_status
        if control is not None:
            control.stopping_now(f"stopping with {len(self._current)} job(s) running")
        self._shutdown(slots)
        log.info("worker %s stopped: %s", cfg.worker_id, self.stats.summary())
        return self.stats

    def _shutdown(self, slots: list[threading.Thread]) -> None:
        self._halt.set()
        self._wake_all()
        deadline = time.monotonic() + self.config.grace
        for thread in slots:
            thread.join(max(deadline - time.monotonic(), 0.0))
        if not any(t.is_alive() for t in slots):
            return
        # Grace is over: cooperative handlers stop at their next progress report ...
        self._abort.set()
        deadline = time.monotonic() + self.abort_wait
        for thread in slots:
            thread.join(max(deadline - time.monotonic(), 0.0))
        # ... and the jobs of handlers that never report are handed back from here.
        with self._current_lock:
            leftovers = list(self._current.values())
        for job in leftovers:
            try:
                if queue.release(self.engine, job, "worker stopped, handler did not return"):
                    self.stats.add("released")
            except SQLAlchemyError as exc:
                log.warning("could not release job %s (it will be reaped): %s", job.id, exc)


def start_in_thread(engine: Engine, stop_event: threading.Event,
                    config: WorkerConfig | None = None,
                    handlers: HandlerRegistry | None = None) -> threading.Thread:
    """Run a worker in a daemon thread of this process (single-node mode); join after stopping."""
    worker = Worker(engine, config, handlers)
    thread = threading.Thread(target=worker.run, args=(stop_event,), name="falcon-worker",
                              daemon=True)
    thread.start()
    return thread
