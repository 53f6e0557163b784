"""``falcon worker``: run the job worker (backtests, optimisations, research)."""

from __future__ import annotations

import click

from falcon.cli.context import app


@click.group("worker")
def cli() -> None:
    """The job worker: claims queued jobs and runs them.

    \b
    Example:
      falcon worker run --concurrency 2
    """


@cli.command("run")
@click.option("--id", "worker_id", help="Name recorded on the jobs it runs (default host:pid).")
@click.option("--once", is_flag=True, help="Exit when no job is left in the queue.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Jobs run at the same time.")
@click.option("--poll", "poll_interval", type=click.FloatRange(min=0.01), default=2.0,
              show_default=True, help="Seconds between queue polls when idle.")
@click.option("--heartbeat", "heartbeat_interval", type=click.FloatRange(min=0.01), default=5.0,
              show_default=True, help="Seconds between heartbeats of a running job.")
@click.option("--stale-after", type=click.FloatRange(min=0.02), default=60.0, show_default=True,
              help="Re-queue running jobs whose heartbeat is older than this (dead workers).")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="On SIGTERM, seconds a running job gets to finish before it is re-queued.")
def run_cmd(worker_id: str | None, once: bool, concurrency: int, poll_interval: float,
            heartbeat_interval: float, stale_after: float, grace: float) -> None:
    """Run jobs until SIGTERM (exit 0), telling systemd READY, WATCHDOG and STOPPING.

    \b
    Examples:
      falcon worker run --id pi2 --concurrency 2
      falcon worker run --once          # drain the queue, then exit
    """
    from falcon.jobs.worker import Worker, WorkerConfig, default_worker_id
    from falcon.services.loop import ServiceControl, run_service

    ctx = app()
    engine = ctx.ready_engine()
    ctx.export_to_environment()
    config = WorkerConfig(
        worker_id=worker_id or default_worker_id(), concurrency=concurrency,
        poll_interval=poll_interval, heartbeat_interval=heartbeat_interval,
        stale_after=stale_after, grace=grace, once=once,
    )
    worker = Worker(engine, config)

    def body(control: ServiceControl) -> int:
        worker.run(control.stop_event, control)
        return 0

    code = run_service(body, name=f"falcon-worker {config.worker_id}")
    if not ctx.quiet:
        click.echo(f"worker {config.worker_id}: {worker.stats.summary()}", err=True)
    raise SystemExit(code)
