"""The worker loop, in-process: retries, failures, progress, cancellation and shutdown."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.engine import transaction
from falcon.db.models import Job
from falcon.db.types import utcnow
from falcon.errors import ValidationError
from falcon.jobs import queue
from falcon.jobs.builtin import noop, sleep
from falcon.jobs.registry import HandlerRegistry, Progress
from falcon.jobs.worker import Worker, WorkerConfig, start_in_thread

from .handlers import boom
from .procs import wait_until


def _config(**kw: Any) -> WorkerConfig:
    """Short intervals, so that tests spend their time on the behaviour, not on waiting."""
    return WorkerConfig(**{"poll_interval": 0.05, "heartbeat_interval": 0.05, "stale_after": 1.0,
                           **kw})


def _registry(**extra: Any) -> HandlerRegistry:
    return HandlerRegistry({"noop": noop, "sleep": sleep, "boom": boom, **extra},
                           use_environment=False)


def _submit(sessions: sessionmaker[Session], kind: str, payload: dict[str, Any] | None = None,
            **kw: Any) -> int:
    with transaction(sessions) as s:
        return queue.submit(s, kind, payload, **kw)


def _job(sessions: sessionmaker[Session], job_id: int) -> Job:
    with sessions() as s:
        return queue.get(s, job_id)


def test_once_runs_until_empty_retrying_then_failing(engine: Engine,
                                                     sessions: sessionmaker[Session]) -> None:
    ok = [_submit(sessions, "sleep", {"seconds": 0, "tag": i}) for i in range(3)]
    flaky = _submit(sessions, "boom", {"message": "disk on fire"}, max_attempts=2)
    unknown = _submit(sessions, "mystery")
    worker = Worker(engine, _config(worker_id="w", once=True), _registry())
    stats = worker.run(threading.Event())
    assert (stats.done, stats.retried, stats.failed) == (3, 1, 2)
    for i, job_id in enumerate(ok):
        row = _job(sessions, job_id)
        assert (row.status, row.worker, row.attempts) == ("done", "w", 1)
        assert row.result == {"worker": "w", "job": job_id, "attempt": 1, "tag": i}
    row = _job(sessions, flaky)
    assert (row.status, row.attempts) == ("failed", 2)
    assert row.error == "attempt 2/2 on w: disk on fire"
    row = _job(sessions, unknown)
    assert (row.status, row.attempts) == ("failed", 1)  # no retry: no worker can run it
    assert row.error is not None and "unknown job kind 'mystery'" in row.error


def test_a_handler_that_cannot_be_imported_fails_its_job(engine: Engine,
                                                         sessions: sessionmaker[Session]) -> None:
    job_id = _submit(sessions, "broken")
    registry = _registry(broken="falcon.no_such_module:run")
    Worker(engine, _config(once=True), registry).run(threading.Event())
    row = _job(sessions, job_id)
    assert row.status == "failed"
    assert row.error is not None
    assert "handler falcon.no_such_module:run cannot be imported" in row.error


def test_unexpected_exceptions_and_odd_results(engine: Engine,
                                               sessions: sessionmaker[Session]) -> None:
    def crash(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
        raise KeyError("ticker")

    def scalar(payload: dict[str, Any], progress: Progress) -> Any:
        return 7

    crashed = _submit(sessions, "crash", max_attempts=1)
    wrapped = _submit(sessions, "scalar")
    registry = _registry(crash=crash, scalar=scalar)
    Worker(engine, _config(once=True), registry).run(threading.Event())
    row = _job(sessions, crashed)
    assert row.error == f"attempt 1/1 on {row.worker}: KeyError: 'ticker'"
    assert _job(sessions, wrapped).result == {"value": 7}


def test_progress_is_written_while_the_job_runs(engine: Engine,
                                                sessions: sessionmaker[Session]) -> None:
    seen: dict[str, Any] = {}

    def halfway(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
        progress(0.5, "half")
        wait_until(lambda: _job(sessions, progress.job_id).progress_note == "half",
                   "progress to be written", timeout=10)
        row = _job(sessions, progress.job_id)
        seen.update(progress=row.progress, note=row.progress_note)
        return {}

    job_id = _submit(sessions, "halfway")
    Worker(engine, _config(once=True), _registry(halfway=halfway)).run(
        threading.Event())
    assert seen == {"progress": 0.5, "note": "half"}
    assert _job(sessions, job_id).status == "done"


def test_a_worker_reaps_jobs_of_dead_workers(engine: Engine,
                                             sessions: sessionmaker[Session]) -> None:
    job_id = _submit(sessions, "noop")
    assert queue.claim(engine, "ghost") is not None
    with engine.begin() as conn:
        conn.execute(update(Job).values(heartbeat_at=utcnow() - timedelta(seconds=30)))
    stats = Worker(engine, _config(worker_id="w", once=True), _registry()).run(
        threading.Event())
    assert (stats.reaped, stats.done) == (1, 1)
    row = _job(sessions, job_id)
    assert (row.status, row.worker, row.attempts) == ("done", "w", 2)


def _blocking(started: threading.Event, finished: threading.Event, *, cooperative: bool = True,
              release: threading.Event | None = None) -> Any:
    def handler(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
        started.set()
        try:
            while True:
                if cooperative:
                    progress(None, "working")
                if release is not None and release.wait(0.02):
                    return {"finished": True}
                time.sleep(0.02)
        finally:
            finished.set()

    return handler


def test_cancel_stops_a_running_handler(engine: Engine, sessions: sessionmaker[Session]) -> None:
    started, finished = threading.Event(), threading.Event()
    job_id = _submit(sessions, "block")
    stop = threading.Event()
    thread = start_in_thread(engine, stop, _config(),
                             _registry(block=_blocking(started, finished)))
    assert started.wait(30)
    assert queue.cancel(engine, job_id)
    assert finished.wait(30)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert _job(sessions, job_id).status == "cancelled"


def test_stop_lets_a_running_job_finish_within_grace(engine: Engine,
                                                     sessions: sessionmaker[Session]) -> None:
    started, finished, release = threading.Event(), threading.Event(), threading.Event()
    job_id = _submit(sessions, "block")
    stop = threading.Event()
    thread = start_in_thread(engine, stop, _config(grace=60),
                             _registry(block=_blocking(started, finished, release=release)))
    assert started.wait(30)
    stop.set()
    release.set()  # the job ends on its own, well inside the grace period
    thread.join(30)
    assert not thread.is_alive()
    assert _job(sessions, job_id).status == "done"


@pytest.mark.parametrize("cooperative", [True, False], ids=["cooperative", "deaf"])
def test_stop_releases_a_job_still_running_after_grace(
    engine: Engine, sessions: sessionmaker[Session], cooperative: bool
) -> None:
    started, finished, release = threading.Event(), threading.Event(), threading.Event()
    job_id = _submit(sessions, "block")
    worker = Worker(engine, _config(grace=0.1),
                    _registry(block=_blocking(started, finished, cooperative=cooperative,
                                              release=release)))
    worker.abort_wait = 0.2
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        assert started.wait(30)
        stop.set()
        thread.join(30)
        assert not thread.is_alive()
        row = _job(sessions, job_id)
        assert (row.status, row.attempts, row.worker) == ("queued", 0, None)
        assert worker.stats.released == 1
        assert finished.is_set() is cooperative  # a deaf handler is abandoned, not waited for
    finally:
        release.set()
    if not cooperative:
        assert finished.wait(30)
        # The abandoned handler's late return must not complete the job it no longer owns.
        assert _job(sessions, job_id).status == "queued"


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="at most half"):
        WorkerConfig(heartbeat_interval=40, stale_after=60)
    with pytest.raises(ValidationError, match="concurrency"):
        WorkerConfig(concurrency=0)
    assert WorkerConfig(worker_id="pi", concurrency=2).slot_ids() == ["pi/1", "pi/2"]
