"""``falcon audit``: read and verify the hash-chained audit log."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json, echo_table


@click.group("audit")
def cli() -> None:
    """The audit log of orders, fills, risk decisions, halts and config changes.

    \b
    Examples:
      falcon audit verify
      falcon audit list --limit 20
    """


@cli.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify_cmd(as_json: bool) -> None:
    """Check the hash chain; exit 1 naming the first edited, inserted or deleted entry.

    Keep the printed head hash somewhere else: it also catches entries cut off the end.

    \b
    Example:
      falcon audit verify --json
    """
    from falcon.audit import verify

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as session:
        result = verify(session)
    if as_json:
        echo_json(result.as_dict())
    elif result.ok and result.head_id is not None:
        click.echo(f"{result.message}, head {result.head_id} {result.head_hash}")
    else:
        click.echo(result.message)
    if not result.ok:
        raise SystemExit(1)


@cli.command("list")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--actor", help="Only entries by this actor.")
@click.option("--action", help="Only entries with this action.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(limit: int, actor: str | None, action: str | None, as_json: bool) -> None:
    """Show the newest entries first.

    \b
    Example:
      falcon audit list --actor trader --limit 20
    """
    from sqlalchemy import select

    from falcon.db.models import AuditEntry

    ctx = app()
    ctx.ready_engine()
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if actor:
        stmt = stmt.where(AuditEntry.actor == actor)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    with ctx.sessions() as session:
        entries = list(session.scalars(stmt))
    if as_json:
        echo_json([{"id": e.id, "ts": e.ts, "actor": e.actor, "action": e.action,
                    "subject": e.subject, "detail": e.detail, "hash": e.hash} for e in entries])
        return
    zone = ZoneInfo(ctx.settings.timezone)
    echo_table(None, ["id", "time", "actor", "action", "subject", "detail"],
               [(e.id, e.ts.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z"), e.actor,
                 e.action, e.subject, json.dumps(e.detail, sort_keys=True)[:80])
                for e in entries])
