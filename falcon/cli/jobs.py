"""``falcon jobs``: look at and feed the job queue."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json, echo_table
from falcon.errors import ValidationError


def _local(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(ZoneInfo(app().settings.timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _job_dict(job: Any) -> dict[str, Any]:
    return {
        "id": job.id, "kind": job.kind, "status": job.status, "priority": job.priority,
        "attempts": job.attempts, "max_attempts": job.max_attempts, "worker": job.worker,
        "progress": job.progress, "progress_note": job.progress_note, "payload": job.payload,
        "result": job.result, "error": job.error, "created_at": job.created_at,
        "started_at": job.started_at, "heartbeat_at": job.heartbeat_at,
        "finished_at": job.finished_at,
    }


@click.group("jobs")
def cli() -> None:
    """The job queue: list, inspect, submit and cancel jobs.

    \b
    Examples:
      falcon jobs list --status running
      falcon jobs submit sleep --payload '{"seconds": 2}'
    """


@cli.command("list")
@click.option("--status", type=click.Choice(["queued", "running", "done", "failed", "cancelled"]),
              help="Only jobs in this state.")
@click.option("--kind", help="Only jobs of this kind.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(status: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """List the newest jobs first, with a count of each state.

    \b
    Example:
      falcon jobs list --status failed --limit 10
    """
    from falcon.jobs import queue

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as session:
        jobs = queue.list_jobs(session, status=status, kind=kind, limit=limit)
        counts = queue.counts(session)
    if as_json:
        echo_json({"counts": counts, "jobs": [_job_dict(j) for j in jobs]})
        return
    echo_table(
        ", ".join(f"{n} {s}" for s, n in counts.items()),
        ["id", "kind", "status", "try", "worker", "progress", "created", "error"],
        [(j.id, j.kind, j.status, f"{j.attempts}/{j.max_attempts}", j.worker,
          f"{j.progress:.0%}", _local(j.created_at), (j.error or "")[:60]) for j in jobs],
    )


@cli.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(job_id: int, as_json: bool) -> None:
    """Show one job: payload, progress, result or error.

    \b
    Example:
      falcon jobs show 42 --json
    """
    from falcon.jobs import queue

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as session:
        data = _job_dict(queue.get(session, job_id))
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if isinstance(value, datetime):
            value = _local(value)
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        click.echo(f"{key:<14} {'' if value is None else value}")


@cli.command("submit")
@click.argument("kind")
@click.option("--payload", default="{}", show_default=True, help="The job's input, a JSON object.")
@click.option("--priority", type=int, default=100, show_default=True,
              help="Lower runs first.")
@click.option("--max-attempts", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def submit_cmd(kind: str, payload: str, priority: int, max_attempts: int, as_json: bool) -> None:
    """Queue a job of KIND; prints its id.

    \b
    Example:
      falcon jobs submit sleep --payload '{"seconds": 5, "tag": "smoke"}'
    """
    from falcon.db.engine import transaction
    from falcon.jobs import queue
    from falcon.jobs.registry import registry

    try:
        document = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"--payload is not valid JSON: {exc}") from None
    registry.target(kind)  # an unknown kind is an error now, not a failed job later
    ctx = app()
    ctx.ready_engine()
    with transaction(ctx.sessions) as session:
        job_id = queue.submit(session, kind, document, priority=priority,
                              max_attempts=max_attempts)
    if as_json:
        echo_json({"id": job_id, "kind": kind, "status": "queued"})
    else:
        click.echo(f"job {job_id} queued ({kind})")


@cli.command("cancel")
@click.argument("job_id", type=int)
def cancel_cmd(job_id: int) -> None:
    """Cancel a queued or running job (a running one stops at its next progress report).

    \b
    Example:
      falcon jobs cancel 42
    """
    from falcon.jobs import queue

    ctx = app()
    if queue.cancel(ctx.ready_engine(), job_id):
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id} had already finished; nothing to cancel")
