"""Real ``falcon worker run`` processes sharing one queue: disjoint claims, crashes, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from falcon.db.engine import transaction
from falcon.db.models import Job
from falcon.jobs import queue
from tests.services.sdsocket import NotifySocket

from .procs import start_worker, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes started by a test; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def notify_sockets() -> Iterator[list[NotifySocket]]:
    made: list[NotifySocket] = []
    yield made
    for sock in made:
        sock.close()


def _terminate(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def _status(sessions: sessionmaker[Session], job_id: int) -> str:
    with sessions() as s:
        return queue.get(s, job_id).status


def test_two_workers_take_disjoint_jobs_and_finish_them_all(
    db_url: str, engine: Engine, sessions: sessionmaker[Session], tmp_path: Path,
    procs: list[subprocess.Popen[bytes]], notify_sockets: list[NotifySocket],
) -> None:
    record = tmp_path / "runs.log"
    for name in ("w1", "w2"):
        sock = NotifySocket()
        notify_sockets.append(sock)
        procs.append(start_worker(db_url, "--id", name, "--poll", "0.1", log_dir=tmp_path,
                                  notify=sock.address))
    for sock in notify_sockets:
        sock.wait_for("READY=1")
    # Both are idle now; one transaction queues everything (one NOTIFY wakes both on PG).
    with transaction(sessions) as s:
        ids = [queue.submit(s, "record", {"path": str(record), "seconds": 0.05})
               for _ in range(40)]

    def all_done() -> bool:
        with sessions() as s:
            n = s.scalar(select(func.count()).select_from(Job).where(Job.status == "done"))
            return n == len(ids)

    wait_until(all_done, "all 40 jobs to finish", timeout=120)
    assert [_terminate(p) for p in procs] == [0, 0]

    runs = [line.split() for line in record.read_text().splitlines()]
    assert sorted(int(job_id) for job_id, _ in runs) == ids  # each job ran exactly once
    by_worker = {name: {int(j) for j, w in runs if w == name} for name in ("w1", "w2")}
    assert by_worker["w1"] and by_worker["w2"], by_worker  # and both workers took some
    with sessions() as s:
        rows = {j.id: j for j in queue.list_jobs(s, limit=100)}
    for job_id, worker in runs:
        row = rows[int(job_id)]
        assert (row.worker, row.attempts, row.result) == (worker, 1, {"worker": worker})


# The cluster case: nodes die. (Reaping on SQLite is covered in-process in test_worker.py.)
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_killed_workers_job_is_retried_by_another(
    db_url: str, sessions: sessionmaker[Session], tmp_path: Path,
    procs: list[subprocess.Popen[bytes]], notify_sockets: list[NotifySocket],
) -> None:
    timing = ("--poll", "0.1", "--heartbeat", "0.2", "--stale-after", "1")
    workers: dict[str, subprocess.Popen[bytes]] = {}
    for name in ("a", "b"):
        sock = NotifySocket()
        notify_sockets.append(sock)
        workers[name] = start_worker(db_url, "--id", name, *timing, log_dir=tmp_path,
                                     notify=sock.address)
        procs.append(workers[name])
    for sock in notify_sockets:
        sock.wait_for("READY=1")
    with transaction(sessions) as s:
        job_id = queue.submit(s, "stall", {"seconds": 120})  # stalls on its first attempt only

    def stalling_on() -> str | None:
        with sessions() as s:
            row = queue.get(s, job_id)
            return row.worker if row.progress_note == "stalling" else None

    victim = wait_until(stalling_on, "a worker to be inside the job")
    rescuer = "b" if victim == "a" else "a"
    workers[victim].send_signal(signal.SIGKILL)
    assert workers[victim].wait(timeout=30) == -signal.SIGKILL
    with sessions() as s:
        assert queue.get(s, job_id).status == "running"  # nobody told the database

    wait_until(lambda: _status(sessions, job_id) == "done", "the job to be retried", timeout=120)
    assert _terminate(workers[rescuer]) == 0
    with sessions() as s:
        row = queue.get(s, job_id)
    assert (row.worker, row.attempts) == (rescuer, 2)
    assert row.result == {"worker": rescuer, "attempt": 2}


def test_sigterm_releases_the_job_and_exits_0_telling_systemd(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], notify_sockets: list[NotifySocket],
) -> None:
    # SQLite in FALCON_HOME, created and migrated by the worker itself (single-node default).
    from falcon.config import load_settings
    from falcon.db.engine import make_engine, session_factory

    url = load_settings().effective_database_url
    sock = NotifySocket(abstract=True)
    notify_sockets.append(sock)
    proc = start_worker(url, "--id", "svc", "--poll", "0.1", "--grace", "0.2",
                        log_dir=tmp_path, notify=sock.address,
                        env={"WATCHDOG_USEC": "200000"})
    procs.append(proc)
    sock.wait_for("READY=1")
    sock.wait_for("WATCHDOG=1", count=3)  # pings keep coming, every 0.1 s

    engine = make_engine(url)
    sessions = session_factory(engine)
    try:
        with transaction(sessions) as s:
            job_id = queue.submit(s, "sleep", {"seconds": 600})
        wait_until(lambda: _status(sessions, job_id) == "running", "the job to start")
        assert _terminate(proc) == 0
        sock.wait_for("STOPPING=1")
        with sessions() as s:
            row = queue.get(s, job_id)
        assert (row.status, row.attempts, row.worker) == ("queued", 0, None)
        assert row.progress_note == "released by svc: worker shutting down"
    finally:
        engine.dispose()
    assert any(f.startswith("STATUS=") for f in sock.fields())
