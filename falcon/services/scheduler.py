"""The scheduler service: screens, the daily data sync, reference refreshes and housekeeping.

APScheduler 3 (``BackgroundScheduler``) fires the jobs; its job store is the database
(``SQLAlchemyJobStore``, table ``apscheduler_jobs``) so that every compute node sees the same jobs
and a node that was down catches up what it missed within each job's grace period (``coalesce``:
several missed runs become one).

APScheduler 3 does not stop two processes sharing a job store from running the same job, so every
run first *claims* its (job name, scheduled fire time): it inserts its ``service_runs`` row with
``scheduled_for`` set, and the unique constraint on (name, scheduled_for) lets exactly one insert
through, on either database, across threads, processes and nodes. The node whose insert violates
the constraint does nothing. The claimed row records the run for the dashboard: ``scheduled_for``
(the claim key), ``started_at`` (when this node began), and ``finished_at``, ``outcome``
(ok | failed | skipped) and ``error`` when it ends.

Jobs that belong to trading days use :class:`TradingDayCronTrigger` (cron in America/New_York that
skips NYSE holidays) and check the calendar again when they fire.

Example::

    service = SchedulerService(settings, engine)
    service.start()          # jobs run in background threads
    ...
    service.shutdown()
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import cast

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine, Table, delete, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from falcon import calendar as cal
from falcon.config import Settings
from falcon.db.engine import session_factory, transaction
from falcon.db.models import ServiceRun
from falcon.db.types import utcnow
from falcon.errors import FalconError

log = logging.getLogger(__name__)

__all__ = [
    "DATA_SYNC_TIMES",
    "JobSpec",
    "SchedulerService",
    "Skip",
    "TradingDayCronTrigger",
    "claim",
    "fire_times",
    "job_specs",
    "run_job",
    "trigger_for",
]

NEW_YORK = "America/New_York"
#: Flat files for a session appear some time after the close; the second try the next morning
#: catches a late file (the import is idempotent, so a second run of a done day costs nothing).
DATA_SYNC_TIMES = ("17:30", "07:00")
REFERENCE_TIME = "06:00"
HOUSEKEEPING_TIME = "03:15"
SCREEN_GRACE_S = 6 * 3600
SYNC_GRACE_S = 6 * 3600
SERVICE_RUNS_KEEP_DAYS = 90
SYNC_SESSIONS_BACK = 5
JOBSTORE_TABLE = "apscheduler_jobs"


class Skip(FalconError):
    """Raised by an action that has nothing to do; the run is recorded as ``skipped``."""


class TradingDayCronTrigger(CronTrigger):
    """A cron trigger (America/New_York by default) that fires only on NYSE sessions."""

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        fire = super().get_next_fire_time(previous_fire_time, now)
        # A year has fewer than 15 weekday holidays in a row; 30 tries is ample.
        for _ in range(30):
            if fire is None:
                return None
            day = fire.astimezone(cal.NEW_YORK).date()
            try:
                if cal.is_trading_day(day):
                    return fire
            except cal.CalendarError:
                return None  # beyond the calendar: better never fire than fire on a holiday
            midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=cal.NEW_YORK)
            fire = super().get_next_fire_time(None, midnight)
        return None


def trigger_for(entry: str, *, trading_days: bool = True) -> CronTrigger:
    """A trigger for ``HH:MM`` (weekdays) or a 5-field cron string, in America/New_York."""
    cls = TradingDayCronTrigger if trading_days else CronTrigger
    if ":" in entry and len(entry.split()) == 1:
        hour, minute = entry.split(":")
        days = "mon-fri" if trading_days else "*"
        return cls(day_of_week=days, hour=int(hour), minute=int(minute), timezone=NEW_YORK)
    fields = entry.split()
    return cls(minute=fields[0], hour=fields[1], day=fields[2], month=fields[3],
               day_of_week=fields[4], timezone=NEW_YORK)


def fire_times(trigger: CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time of ``trigger`` from ``start`` to ``end`` inclusive (aware datetimes)."""
    out: list[datetime] = []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire <= end:
        out.append(fire)
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return out


# --- jobs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: its id (also the ``service_runs`` name), when, and what it does."""

    id: str
    trigger: CronTrigger
    action: str  # screen | data_sync | reference | housekeeping
    arg: str | None = None
    trading_days: bool = True
    grace_s: int = SCREEN_GRACE_S


def job_specs(settings: Settings) -> list[JobSpec]:
    """The jobs the scheduler runs: each profile at each of its times, sync, reference, cleanup."""
    from falcon.screener.profiles import load_profiles

    specs = []
    for name, profile in sorted(load_profiles(settings).items()):
        for i, entry in enumerate(profile.schedule):
            suffix = "" if i == 0 else f"#{i + 1}"
            specs.append(JobSpec(f"screen:{name}{suffix}", trigger_for(entry), "screen", name))
    for i, entry in enumerate(DATA_SYNC_TIMES):
        suffix = "" if i == 0 else f"#{i + 1}"
        specs.append(JobSpec(f"data:sync{suffix}", trigger_for(entry), "data_sync",
                             grace_s=SYNC_GRACE_S))
    specs.append(JobSpec("reference:refresh", trigger_for(REFERENCE_TIME), "reference"))
    specs.append(JobSpec("housekeeping", trigger_for(HOUSEKEEPING_TIME, trading_days=False),
                         "housekeeping", trading_days=False, grace_s=24 * 3600))
    return specs


def claim(engine: Engine, name: str, fire_time: datetime) -> int | None:
    """Claim the run of job ``name`` scheduled at ``fire_time``; its ServiceRun id, or None.

    Exactly one caller wins per (name, fire_time), across threads, processes and nodes: the
    database's unique (name, scheduled_for) constraint decides, so there is no check-then-insert
    window for two nodes to slip through together.
    """
    when = fire_time.astimezone(UTC)
    runs = cast(Table, ServiceRun.__table__)
    try:
        # Its own short transaction: on PostgreSQL a unique violation aborts the transaction it
        # happens in, and nothing else must be lost with it.
        with engine.begin() as conn:
            run_id = conn.execute(
                insert(runs).values(name=name, scheduled_for=when, started_at=utcnow(),
                                    outcome="running").returning(runs.c.id)
            ).scalar_one()
    except IntegrityError as exc:
        if not _is_unique_violation(exc):
            raise
        return None
    return int(run_id)


def _is_unique_violation(exc: IntegrityError) -> bool:
    """True when ``exc`` is the (name, scheduled_for) constraint, not some other integrity error."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code is not None:
        return bool(code == "23505")  # unique_violation
    return "UNIQUE constraint failed" in str(exc.orig)


def _finish(sessions: sessionmaker[Session], run_id: int, outcome: str,
            error: str | None) -> None:
    with transaction(sessions) as s:
        s.execute(update(ServiceRun).where(ServiceRun.id == run_id).values(
            finished_at=utcnow(), outcome=outcome, error=error[:4000] if error else None))


@dataclass
class _Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    specs: dict[str, JobSpec]


_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()


def _scheduled_time(spec: JobSpec, now: datetime) -> datetime:
    """The fire time this run belongs to: the trigger's latest fire time at or before ``now``.

    APScheduler does not hand a job its scheduled time, and both nodes must agree on the claim
    key, so it is derived from the trigger (the same on every node) rather than the clock.
    """
    start = now - timedelta(seconds=spec.grace_s + 60)
    times = fire_times(spec.trigger, start, now)
    if times:
        return times[-1]
    return now.replace(second=0, microsecond=0)  # a run outside the schedule (by hand)


def run_job(job_id: str, *, fire_time: datetime | None = None) -> str:
    """Run scheduled job ``job_id`` once, claimed and recorded; the outcome.

    APScheduler calls this with the id alone (it is what the job store pickles). Tests and
    ``falcon scheduler run-job`` pass ``fire_time`` to run a given occurrence.
    """
    rt = _runtime
    if rt is None:
        raise FalconError("scheduler runtime not initialised (start a SchedulerService)")
    return _run(rt, job_id, fire_time)


def _run(rt: _Runtime, job_id: str, fire_time: datetime | None) -> str:
    spec = rt.specs.get(job_id)
    if spec is None:
        log.warning("job %s is no longer configured; ignoring", job_id)
        return "unknown"
    when = fire_time or _scheduled_time(spec, datetime.now(UTC))
    run_id = claim(rt.engine, spec.id, when)
    if run_id is None:
        log.info("%s at %s already claimed by another node", spec.id, when.isoformat())
        return "claimed-elsewhere"
    outcome, error = "ok", None
    try:
        if spec.trading_days and not cal.is_trading_day(when.astimezone(cal.NEW_YORK).date()):
            raise Skip(f"{when.astimezone(cal.NEW_YORK).date()} is not an NYSE trading day")
        detail = ACTIONS[spec.action](rt, spec, when)
        log.info("%s: %s", spec.id, detail)
    except Skip as exc:
        outcome, error = "skipped", str(exc)
    except FalconError as exc:
        outcome, error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("%s failed: %s", spec.id, error)
    except Exception as exc:  # a bug in one job must not take down the scheduler
        outcome = "failed"
        error = f"{type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=8)
        log.exception("%s crashed", spec.id)
    _finish(rt.sessions, run_id, outcome, error)
    return outcome


def _screen(rt: _Runtime, spec: JobSpec, when: datetime) -> str:
    from falcon.screener.engine import run_screens
    from falcon.screener.profiles import load_profiles, select_profiles

    profiles = select_profiles(load_profiles(rt.settings), [spec.arg or ""])
    as_of = cal.last_completed_session(when)
    results = run_screens(rt.settings, rt.sessions, profiles, as_of=as_of)
    return "; ".join(f"run {r.run_id}: {len(r.picks)} picks" for r in results)


def _data_sync(rt: _Runtime, spec: JobSpec, when: datetime) -> str:
    try:
        from falcon.data.sync import sync
    except ImportError:
        raise Skip("sync not available: this build has no falcon.data.sync") from None
    secrets = rt.settings.secrets
    if not (secrets.s3_access_key_id and secrets.s3_secret_access_key):
        raise Skip("no S3 credentials (FALCON_S3_ACCESS_KEY_ID, FALCON_S3_SECRET_ACCESS_KEY)")
    end = cal.last_completed_session(when)
    # A few sessions back, so that a day missed while every node was down is filled in too;
    # sessions already imported are skipped by the sync itself.
    start = cal.trading_days(end - timedelta(days=14), end)[-SYNC_SESSIONS_BACK]
    report = sync(rt.settings, rt.sessions, start=start, end=end, kind="day")
    detail = (f"{start}..{end}: {len(report.downloaded)} downloaded, "
              f"{len(report.skipped)} already there, {len(report.missing)} not published")
    if report.imports is not None and report.imports.rejected:
        raise FalconError(f"{detail}; {len(report.imports.rejected)} files rejected")
    return detail


def _reference(rt: _Runtime, spec: JobSpec, when: datetime) -> str:
    from falcon.screener.reference import ReferenceClient, refresh

    if not rt.settings.secrets.massive_api_key:
        raise Skip("no FALCON_MASSIVE_API_KEY: reference data comes from CSV files only")
    client = ReferenceClient.from_settings(rt.settings)
    return refresh(client, rt.sessions, details="missing", max_details=2000).summary()


def _housekeeping(rt: _Runtime, spec: JobSpec, when: datetime) -> str:
    cutoff = utcnow() - timedelta(days=SERVICE_RUNS_KEEP_DAYS)
    with transaction(rt.sessions) as s:
        result = s.execute(delete(ServiceRun).where(ServiceRun.started_at < cutoff,
                                                    ServiceRun.outcome != "running"))
        gone = getattr(result, "rowcount", 0)
    detail = f"removed {gone} service runs older than {SERVICE_RUNS_KEEP_DAYS} days"
    from falcon.web.live import prune_events  # web sits beside services; import on use

    days = rt.settings.web.events_retention_days
    # Events are the live pages' transport, not a record: only the last few days are needed.
    pruned = prune_events(rt.engine, timedelta(days=days))
    return f"{detail}; {pruned} events older than {days} days"


ACTIONS: dict[str, Callable[[_Runtime, JobSpec, datetime], str]] = {
    "screen": _screen,
    "data_sync": _data_sync,
    "reference": _reference,
    "housekeeping": _housekeeping,
}


# --- the service -------------------------------------------------------------------------------


class SchedulerService:
    """APScheduler over the database job store, with the jobs of :func:`job_specs`."""

    def __init__(self, settings: Settings, engine: Engine, *,
                 specs: list[JobSpec] | None = None, max_workers: int = 2) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        self.settings = settings
        self.engine = engine
        self.specs = specs if specs is not None else job_specs(settings)
        self.scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBSTORE_TABLE)},
            executors={"default": ThreadPoolExecutor(max_workers)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=NEW_YORK,
        )

    def _make_runtime(self) -> _Runtime:
        return _Runtime(self.settings, self.engine, session_factory(self.engine),
                        {s.id: s for s in self.specs})

    def install_runtime(self) -> None:
        """Make :func:`run_job` use this service's settings, database and jobs."""
        global _runtime
        with _runtime_lock:
            _runtime = self._make_runtime()

    def run_job(self, job_id: str, *, fire_time: datetime | None = None) -> str:
        """Run job ``job_id`` once with this service's database, claimed like a scheduled run.

        Unlike the module's :func:`run_job` (what the job store calls), this does not touch the
        process-wide runtime, so two services in one process behave as two nodes would.
        """
        return _run(self._make_runtime(), job_id, fire_time)

    def start(self) -> None:
        """Install the runtime, sync the job store with the specs and start firing."""
        self.install_runtime()
        # Paused first: the job store must be open to compare what is stored with what we want,
        # and nothing may fire before the comparison is done.
        self.scheduler.start(paused=True)
        self._sync_jobs()
        self.scheduler.resume()

    def _sync_jobs(self) -> None:
        wanted = {s.id: s for s in self.specs}
        for job in self.scheduler.get_jobs():
            if job.id not in wanted:
                log.info("removing job %s (no longer configured)", job.id)
                job.remove()
        for spec in self.specs:
            existing = self.scheduler.get_job(spec.id)
            if (existing is not None and str(existing.trigger) == str(spec.trigger)
                    and existing.misfire_grace_time == spec.grace_s):
                # Keep its stored next_run_time: that is how runs missed while every node was
                # down get caught up (re-adding would restart the schedule from now).
                continue
            self.scheduler.add_job(
                "falcon.services.scheduler:run_job", trigger=spec.trigger, args=[spec.id],
                id=spec.id, name=spec.id, replace_existing=True,
                misfire_grace_time=spec.grace_s, coalesce=True, max_instances=1,
            )

    def next_runs(self) -> list[tuple[str, datetime | None]]:
        """(job id, next fire time) of every stored job."""
        return [(job.id, job.next_run_time) for job in self.scheduler.get_jobs()]

    @property
    def running(self) -> bool:
        """True while the scheduler thread is alive."""
        from apscheduler.schedulers.base import STATE_STOPPED

        return bool(self.scheduler.state != STATE_STOPPED)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop firing; with ``wait`` let running jobs finish."""
        if self.running:
            self.scheduler.shutdown(wait=wait)


def upcoming(specs: list[JobSpec], start: datetime, days: int) -> Iterator[tuple[datetime, str]]:
    """(fire time, job id) of every job over the next ``days`` days, in time order."""
    end = start + timedelta(days=days)
    rows = [(t, s.id) for s in specs for t in fire_times(s.trigger, start, end)]
    yield from sorted(rows)
