"""The job queue: rows of the ``jobs`` table, shared by every worker through the database.

Life of a job::

    queued --claim--> running --complete--> done
       ^                 |  \\--fail (attempts left)--> queued
       |                 |   \\-fail (no attempts left)--> failed
       +---reap_stale----+  (a worker stopped heartbeating; same attempt rule)
    queued|running --cancel--> cancelled

Two workers never run the same attempt of a job: on PostgreSQL the claim locks the next queued row
with ``SELECT ... FOR UPDATE SKIP LOCKED`` (workers skip each other's rows instead of queueing on
them); on SQLite the claim is a single ``UPDATE ... WHERE id = (SELECT ...) AND status = 'queued'``
statement, which SQLite runs under its one write lock.

A claimed job is identified by its id *and* attempt number (:class:`ClaimedJob`): every later write
(heartbeat, complete, fail, release) only touches the row while it is still running that attempt
on that worker, so a worker that was presumed dead and reaped cannot overwrite the work of the
worker that took the job over.

Heartbeats use the database server's clock on PostgreSQL, because the compute nodes' clocks
(Raspberry Pis have no RTC) may disagree with each other; SQLite is one machine and one clock.

Example::

    with transaction(sessions) as s:
        job_id = submit(s, "sleep", {"seconds": 1})
    job = claim(engine, "pi2:1234")
    if job is not None:
        complete(engine, job, {"ok": True})
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, Interval, String, bindparam, case, cast, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from falcon.db.models import Job
from falcon.db.types import utcnow
from falcon.errors import FalconError, NotFound, ValidationError

__all__ = [
    "ACTIVE_STATUSES",
    "CHANNEL",
    "STATUSES",
    "ClaimedJob",
    "JobCancelled",
    "cancel",
    "claim",
    "complete",
    "counts",
    "fail",
    "get",
    "heartbeat",
    "list_jobs",
    "reap_stale",
    "release",
    "submit",
]

#: The PostgreSQL NOTIFY channel that :func:`submit` signals and workers LISTEN on.
CHANNEL = "falcon_jobs"
STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
_KIND_MAX = 32  # the width of jobs.kind
_WORKER_MAX = 120  # the width of jobs.worker


class JobCancelled(FalconError):
    """The job was cancelled, taken over by another worker, or released at shutdown."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker now runs: the row's id, the attempt and what to do."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    worker: str


def _is_pg(bind: Engine | Session) -> bool:
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return engine.dialect.name == "postgresql"


def _now(engine: Engine) -> ColumnElement[Any] | datetime:
    """The current UTC time as the database server sees it (see the module docstring)."""
    if _is_pg(engine):
        # statement_timestamp() is timestamptz; the column is naive UTC, so convert explicitly
        # rather than trusting the server's TimeZone setting.
        return func.timezone("utc", func.statement_timestamp())
    return utcnow()


def _ago(engine: Engine, seconds: float) -> ColumnElement[Any] | datetime:
    if _is_pg(engine):
        age = bindparam("age", timedelta(seconds=seconds), type_=Interval())
        return func.timezone("utc", func.statement_timestamp()) - age
    return utcnow() - timedelta(seconds=seconds)


def _json_dict(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a plain JSON object (what the JSON column will give back), or an error."""
    if value is None:
        return {}
    try:
        out = json.loads(json.dumps(value, allow_nan=False, default=str))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(out, dict):
        raise ValidationError(f"{what} must be a JSON object, got {type(value).__name__}")
    return out


def submit(
    session: Session,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    priority: int = 100,
    max_attempts: int = 3,
) -> int:
    """Queue a job in the caller's transaction and return its id; lower priority runs first.

    On PostgreSQL a ``NOTIFY falcon_jobs`` goes out with the commit, so idle workers wake at once.
    """
    if not kind or len(kind) > _KIND_MAX:
        raise ValidationError(f"job kind must be 1 to {_KIND_MAX} characters, got {kind!r}")
    if max_attempts < 1:
        raise ValidationError(f"max_attempts must be at least 1, got {max_attempts}")
    job = Job(
        kind=kind,
        payload=_json_dict(payload, "job payload"),
        status="queued",
        priority=int(priority),
        attempts=0,
        max_attempts=int(max_attempts),
        progress=0.0,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    if _is_pg(session):
        # NOTIFY is transactional: listeners hear it only if (and when) the caller commits.
        session.execute(select(func.pg_notify(CHANNEL, kind)))
    return job.id


def claim(engine: Engine, worker_id: str) -> ClaimedJob | None:
    """Take the next queued job (lowest priority, then oldest) for ``worker_id``; None if none."""
    if not worker_id or len(worker_id) > _WORKER_MAX:
        raise ValidationError(f"worker id must be 1 to {_WORKER_MAX} characters")
    next_id = (
        select(Job.id)
        .where(Job.status == "queued")
        .order_by(Job.priority, Job.id)
        .limit(1)
    )
    values = {
        "status": "running",
        "worker": worker_id,
        "attempts": Job.attempts + 1,
        "started_at": _now(engine),
        "heartbeat_at": _now(engine),
        "progress": 0.0,
        "progress_note": None,
    }
    returning = (Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
    with engine.begin() as conn:
        if _is_pg(engine):
            job_id = conn.execute(next_id.with_for_update(skip_locked=True)).scalar()
            if job_id is None:
                return None
            row = conn.execute(
                update(Job).where(Job.id == job_id).values(**values).returning(*returning)
            ).one()
        else:
            # One statement: SQLite takes its write lock before evaluating the subquery, so no
            # other writer can claim the same row in between; the status check is belt and braces.
            found = conn.execute(
                update(Job)
                .where(Job.id == next_id.scalar_subquery(), Job.status == "queued")
                .values(**values)
                .returning(*returning)
            ).first()
            if found is None:
                return None
            row = found
    return ClaimedJob(
        id=row.id,
        kind=row.kind,
        payload=dict(row.payload or {}),
        attempt=row.attempts,
        max_attempts=row.max_attempts,
        worker=worker_id,
    )


def _owned(job: ClaimedJob) -> tuple[ColumnElement[bool], ...]:
    return (
        Job.id == job.id,
        Job.status == "running",
        Job.worker == job.worker,
        Job.attempts == job.attempt,
    )


def heartbeat(
    engine: Engine, job: ClaimedJob, fraction: float | None = None, note: str | None = None
) -> bool:
    """Record that ``job`` is alive (and its progress, 0..1); False when it is no longer ours.

    False means the job was cancelled or reaped and re-queued: the caller should stop working.
    """
    values: dict[str, Any] = {"heartbeat_at": _now(engine)}
    if fraction is not None:
        if not math.isfinite(fraction):
            raise ValidationError(f"progress must be a finite number, got {fraction!r}")
        values["progress"] = min(max(float(fraction), 0.0), 1.0)
    if note is not None:
        values["progress_note"] = note
    with engine.begin() as conn:
        return conn.execute(update(Job).where(*_owned(job)).values(**values)).rowcount == 1


def complete(engine: Engine, job: ClaimedJob, result: dict[str, Any] | None = None) -> bool:
    """Mark ``job`` done with ``result``; False (and nothing written) when it is no longer ours."""
    values = {
        "status": "done",
        "result": _json_dict(result, "job result"),
        "progress": 1.0,
        "error": None,
        "finished_at": _now(engine),
        "heartbeat_at": _now(engine),
    }
    with engine.begin() as conn:
        return conn.execute(update(Job).where(*_owned(job)).values(**values)).rowcount == 1


def fail(
    engine: Engine, job: ClaimedJob, error: str, *, retry: bool = True
) -> Literal["queued", "failed", "lost"]:
    """Record a failed attempt: re-queue while attempts remain (and ``retry``), else mark failed.

    Returns the job's new status, or ``"lost"`` when it was no longer ours to change.
    """
    final = not retry or job.attempt >= job.max_attempts
    values: dict[str, Any] = {
        "status": "failed" if final else "queued",
        "error": f"attempt {job.attempt}/{job.max_attempts} on {job.worker}: {error}",
    }
    if final:
        values["finished_at"] = _now(engine)
    else:
        values["worker"] = None
    with engine.begin() as conn:
        if conn.execute(update(Job).where(*_owned(job)).values(**values)).rowcount != 1:
            return "lost"
    return "failed" if final else "queued"


def release(engine: Engine, job: ClaimedJob, reason: str = "worker shutting down") -> bool:
    """Give ``job`` back to the queue without counting the attempt (a clean shutdown)."""
    values = {
        "status": "queued",
        "worker": None,
        "attempts": Job.attempts - 1,
        "progress_note": f"released by {job.worker}: {reason}",
    }
    with engine.begin() as conn:
        return conn.execute(update(Job).where(*_owned(job)).values(**values)).rowcount == 1


def reap_stale(engine: Engine, timeout_s: float) -> int:
    """Re-queue running jobs whose heartbeat is older than ``timeout_s`` (their worker died).

    A job that has used all its attempts is marked failed instead. Returns how many were reaped.
    """
    if timeout_s <= 0:
        raise ValidationError(f"heartbeat timeout must be positive, got {timeout_s}")
    out_of_attempts = Job.attempts >= Job.max_attempts
    message = "worker " + func.coalesce(Job.worker, "?") + " stopped heartbeating"
    stmt = (
        update(Job)
        .where(Job.status == "running", Job.heartbeat_at < _ago(engine, timeout_s))
        .values(
            status=case((out_of_attempts, "failed"), else_="queued"),
            error="attempt " + cast(Job.attempts, String) + ": " + message,
            worker=case((out_of_attempts, Job.worker), else_=None),
            finished_at=case((out_of_attempts, _now(engine)), else_=None),
        )
    )
    with engine.begin() as conn:
        return int(conn.execute(stmt).rowcount or 0)


def cancel(engine: Engine, job_id: int) -> bool:
    """Cancel a queued or running job; False when it had already finished.

    A running job stops at its next heartbeat or progress report (its worker is told through
    :class:`JobCancelled`), so a handler that never reports progress runs to its end.
    """
    with engine.begin() as conn:
        changed = conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(ACTIVE_STATUSES))
            .values(status="cancelled", finished_at=_now(engine), error="cancelled")
        ).rowcount
        if changed:
            return True
        if conn.execute(select(Job.id).where(Job.id == job_id)).scalar() is None:
            raise NotFound(f"job {job_id} does not exist")
    return False


def get(session: Session, job_id: int) -> Job:
    """The job row ``job_id`` (NotFound if there is none)."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def list_jobs(
    session: Session,
    *,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 50,
) -> list[Job]:
    """The newest jobs first, optionally only of one status or kind."""
    if status is not None and status not in STATUSES:
        raise ValidationError(f"unknown job status {status!r} (one of {', '.join(STATUSES)})")
    stmt = select(Job).order_by(Job.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    return list(session.scalars(stmt))


def counts(session: Session) -> dict[str, int]:
    """How many jobs are in each status (every status present, zero when none)."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    found = {status: int(n) for status, n in rows}
    return {status: found.get(status, 0) for status in STATUSES} | found

