"""``falcon scheduler``: the service that runs screens, syncs and refreshes on the NYSE calendar."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json, echo_table


@click.group("scheduler")
def cli() -> None:
    """Scheduled work: screens at each profile's times, data sync, reference refresh.

    \b
    Examples:
      falcon scheduler run
      falcon scheduler jobs --days 7
    """


@cli.command("run")
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Jobs that may run at the same time.")
def run_cmd(workers: int) -> None:
    """Run the scheduler until SIGTERM (exit 0), telling systemd READY, WATCHDOG and STOPPING.

    Any number of compute nodes may run it against the same database: each scheduled run is
    claimed in the database first, so exactly one node runs it.

    \b
    Example:
      FALCON_DATABASE_URL=postgresql://falcon@db/falcon falcon scheduler run
    """
    import logging

    from falcon.services.loop import ServiceControl, run_service
    from falcon.services.scheduler import SchedulerService

    log = logging.getLogger("falcon.scheduler")
    ctx = app()
    engine = ctx.ready_engine()
    service = SchedulerService(ctx.settings, engine, max_workers=workers)

    def body(control: ServiceControl) -> int:
        service.start()
        try:
            control.ready(f"{len(service.specs)} jobs scheduled")
            log.info("scheduler started with %d jobs", len(service.specs))
            while not control.wait(30.0):
                if not service.running:
                    log.error("the scheduler thread stopped; exiting so systemd restarts us")
                    return 1
                upcoming = [t for _, t in service.next_runs() if t is not None]
                if upcoming:
                    control.status(f"next run {min(upcoming).isoformat()}")
        finally:
            # Let running jobs finish: a screen half-stored is worse than a slower stop.
            service.shutdown(wait=True)
        return 0

    raise SystemExit(run_service(body, name="falcon-scheduler"))


@cli.command("jobs")
@click.option("--days", type=click.IntRange(1, 60), default=3, show_default=True,
              help="How far ahead to list fire times.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_cmd(days: int, as_json: bool) -> None:
    """List the scheduled jobs' next fire times (NYSE holidays already skipped).

    \b
    Example:
      falcon scheduler jobs --days 7
    """
    from falcon.calendar import NEW_YORK
    from falcon.services.scheduler import job_specs, upcoming

    rows = [(t, job) for t, job in upcoming(job_specs(app().settings), datetime.now(UTC), days)]
    if as_json:
        echo_json([{"job": job, "at": t.astimezone(UTC)} for t, job in rows])
        return
    echo_table(f"next {days} days (America/New_York)", ["when", "job"],
               [(t.astimezone(NEW_YORK).strftime("%a %Y-%m-%d %H:%M"), job) for t, job in rows])


@cli.command("run-job")
@click.argument("job_id")
def run_job_cmd(job_id: str) -> None:
    """Run one scheduled job now (claimed and recorded like a scheduled run).

    \b
    Example:
      falcon scheduler run-job screen:momentum_breakout
    """
    from falcon.errors import NotFound
    from falcon.services.scheduler import SchedulerService, run_job

    ctx = app()
    engine = ctx.ready_engine()
    service = SchedulerService(ctx.settings, engine)
    if job_id not in {s.id for s in service.specs}:
        raise NotFound(f"no job {job_id!r}; have: {', '.join(s.id for s in service.specs)}")
    service.install_runtime()
    now = datetime.now(UTC).replace(microsecond=0)
    outcome = run_job(job_id, fire_time=now)
    click.echo(f"{job_id}: {outcome}")
    if outcome == "failed":
        raise SystemExit(1)
