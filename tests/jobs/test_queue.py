"""The queue's operations, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.engine import make_engine, session_factory, transaction
from falcon.db.models import Job
from falcon.db.types import utcnow
from falcon.errors import NotFound, ValidationError
from falcon.jobs import queue


def _submit(sessions: sessionmaker[Session], kind: str = "noop", n: int = 1,
            **kw: Any) -> list[int]:
    with transaction(sessions) as s:
        return [queue.submit(s, kind, {"i": i}, **kw) for i in range(n)]


def _job(sessions: sessionmaker[Session], job_id: int) -> Job:
    with sessions() as s:
        return queue.get(s, job_id)


def _age_heartbeat(engine: Engine, job_id: int, seconds: float) -> None:
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id)
                     .values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def test_claim_takes_lowest_priority_then_oldest(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    late = _submit(sessions, priority=100)[0]
    urgent = _submit(sessions, priority=10)[0]
    later = _submit(sessions, priority=100)[0]
    order = [queue.claim(engine, "w") for _ in range(4)]
    assert [j.id if j else None for j in order] == [urgent, late, later, None]
    job = order[0]
    assert job is not None
    assert (job.kind, job.payload, job.attempt, job.worker) == ("noop", {"i": 0}, 1, "w")
    row = _job(sessions, urgent)
    assert (row.status, row.worker, row.attempts) == ("running", "w", 1)
    assert row.started_at is not None and row.heartbeat_at is not None


def test_progress_and_complete(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    [job_id] = _submit(sessions)
    job = queue.claim(engine, "w")
    assert job is not None
    assert queue.heartbeat(engine, job, 0.25, "a quarter")
    row = _job(sessions, job_id)
    assert (row.progress, row.progress_note) == (0.25, "a quarter")
    assert queue.complete(engine, job, {"answer": 42})
    row = _job(sessions, job_id)
    assert (row.status, row.result, row.progress) == ("done", {"answer": 42}, 1.0)
    assert row.finished_at is not None
    # Done is final: nothing of this attempt may write again.
    assert not queue.heartbeat(engine, job, 0.5)
    assert not queue.complete(engine, job, {"answer": 0})


def test_fail_requeues_until_max_attempts(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    [job_id] = _submit(sessions, max_attempts=2)
    first = queue.claim(engine, "w1")
    assert first is not None and queue.fail(engine, first, "flaky") == "queued"
    row = _job(sessions, job_id)
    assert (row.status, row.worker, row.attempts) == ("queued", None, 1)
    assert row.error is not None and "flaky" in row.error
    second = queue.claim(engine, "w2")
    assert second is not None and second.attempt == 2
    assert queue.fail(engine, second, "still broken") == "failed"
    row = _job(sessions, job_id)
    assert (row.status, row.attempts, row.worker) == ("failed", 2, "w2")
    assert row.error == "attempt 2/2 on w2: still broken"
    assert queue.claim(engine, "w3") is None


def test_fail_without_retry_is_final(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    [job_id] = _submit(sessions, max_attempts=5)
    job = queue.claim(engine, "w")
    assert job is not None
    assert queue.fail(engine, job, "bad input", retry=False) == "failed"
    assert _job(sessions, job_id).status == "failed"


def test_reap_stale_requeues_dead_workers_jobs(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    dead_id, alive_id = _submit(sessions, n=2)
    dead = queue.claim(engine, "dead")
    alive = queue.claim(engine, "alive")
    assert dead is not None and alive is not None
    _age_heartbeat(engine, dead_id, 120)
    assert queue.reap_stale(engine, 60) == 1
    row = _job(sessions, dead_id)
    assert (row.status, row.worker) == ("queued", None)
    assert row.error == "attempt 1: worker dead stopped heartbeating"
    assert _job(sessions, alive_id).status == "running"
    # The presumed-dead worker wakes up: its writes must not touch the re-queued job ...
    assert not queue.heartbeat(engine, dead, 0.9)
    assert not queue.complete(engine, dead, {"late": True})
    assert queue.fail(engine, dead, "late") == "lost"
    # ... nor the next attempt, even under the same worker name.
    again = queue.claim(engine, "dead")
    assert again is not None and (again.id, again.attempt) == (dead_id, 2)
    assert not queue.complete(engine, dead, {"late": True})
    assert queue.complete(engine, again, {"ok": True})


def test_reap_stale_fails_a_job_out_of_attempts(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    [job_id] = _submit(sessions, max_attempts=1)
    assert queue.claim(engine, "w") is not None
    _age_heartbeat(engine, job_id, 120)
    assert queue.reap_stale(engine, 60) == 1
    row = _job(sessions, job_id)
    assert (row.status, row.worker) == ("failed", "w")
    assert row.finished_at is not None


def test_release_gives_the_attempt_back(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    [job_id] = _submit(sessions)
    job = queue.claim(engine, "w")
    assert job is not None and queue.release(engine, job)
    row = _job(sessions, job_id)
    assert (row.status, row.attempts, row.worker) == ("queued", 0, None)


def test_cancel(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    queued_id, running_id = _submit(sessions, n=2)
    running = queue.claim(engine, "w")
    assert running is not None and running.id == queued_id
    assert queue.cancel(engine, running_id)
    assert queue.cancel(engine, queued_id)
    assert not queue.heartbeat(engine, running, 0.5)  # the worker learns it must stop
    assert _job(sessions, queued_id).status == "cancelled"
    assert not queue.cancel(engine, queued_id)
    with pytest.raises(NotFound, match="job 999 does not exist"):
        queue.cancel(engine, 999)


def test_submit_validates(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ValidationError, match="kind"), transaction(sessions) as s:
        queue.submit(s, "x" * 40)
    with pytest.raises(ValidationError, match="JSON object"), transaction(sessions) as s:
        queue.submit(s, "noop", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_attempts"), transaction(sessions) as s:
        queue.submit(s, "noop", max_attempts=0)


def test_list_and_counts(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    _submit(sessions, n=3)
    _submit(sessions, kind="sleep")
    assert queue.claim(engine, "w") is not None
    with sessions() as s:
        assert queue.counts(s) == {"queued": 3, "running": 1, "done": 0, "failed": 0,
                                   "cancelled": 0}
        assert [j.kind for j in queue.list_jobs(s, kind="sleep")] == ["sleep"]
        assert len(queue.list_jobs(s, status="running")) == 1
        with pytest.raises(ValidationError, match="unknown job status"):
            queue.list_jobs(s, status="bogus")


def test_concurrent_claims_never_share_a_job(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    ids = _submit(sessions, n=60)
    taken: dict[str, list[int]] = {f"t{i}": [] for i in range(4)}
    start = threading.Barrier(4)

    def claimer(name: str) -> None:
        start.wait()
        while (job := queue.claim(engine, name)) is not None:
            taken[name].append(job.id)

    threads = [threading.Thread(target=claimer, args=(name,)) for name in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [job_id for got in taken.values() for job_id in got]
    assert sorted(claimed) == ids  # every job once, none twice
    with sessions() as s:
        assert all(j.attempts == 1 for j in queue.list_jobs(s, limit=100))


@pytest.mark.postgres
def test_submit_notifies_listeners_on_commit(module_pg_url: str) -> None:
    import psycopg

    engine = make_engine(module_pg_url)
    sessions = session_factory(engine)
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"LISTEN {queue.CHANNEL}")
            with sessions() as s, s.begin():
                queue.submit(s, "sleep")
                assert list(conn.notifies(timeout=0.2, stop_after=1)) == []  # not before commit
            [note] = list(conn.notifies(timeout=10, stop_after=1))
            assert (note.channel, note.payload) == (queue.CHANNEL, "sleep")
    finally:
        engine.dispose()
