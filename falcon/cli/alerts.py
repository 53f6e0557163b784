"""``falcon alerts``: alert rules, what fired, the outbox, and the delivery service."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json, echo_table

_KIND_CHOICES = ["price_cross", "pct_move", "indicator", "screen_pick", "fill", "halt", "stale",
                 "service_down"]
_BAR_KINDS = {"price_cross", "pct_move", "indicator"}


def _local(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(ZoneInfo(app().settings.timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _alert_settings() -> Any:
    from falcon.alerts.settings import AlertSettings

    return AlertSettings.from_settings(app().settings)


def _rule_dict(r: Any) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "kind": r.kind, "params": r.params,
            "channels": r.channels, "cooldown_s": r.cooldown_s,
            "market_hours_only": r.market_hours_only, "enabled": r.enabled,
            "last_fired_at": r.last_fired_at, "created_at": r.created_at}


@click.group("alerts")
def cli() -> None:
    """Alert rules on prices, indicators, screens, fills, halts, stale data and services.

    \b
    Examples:
      falcon alerts add --kind price_cross --ticker AAPL --above 200 --channel slack
      falcon alerts run        # the delivery service (Slack, Discord, email)
    """


@cli.command("add")
@click.option("--kind", type=click.Choice(_KIND_CHOICES), required=True, help="What to watch.")
@click.option("--ticker", help="The ticker (required for price_cross, pct_move, indicator).")
@click.option("--above", type=float, help="price_cross: fire when the close crosses above.")
@click.option("--below", type=float, help="price_cross: fire when the close crosses below.")
@click.option("--pct", type=float, help="pct_move: the size of the move, in percent.")
@click.option("--direction", type=click.Choice(["up", "down", "any"]),
              help="pct_move: which way (default any).")
@click.option("--bars", type=int, help="pct_move: over this many bars.")
@click.option("--minutes", type=int, help="pct_move: over this many minutes.")
@click.option("--condition", help="indicator: e.g. 'rsi(close, 14) < 30'.")
@click.option("--mode", type=click.Choice(["edge", "level"]),
              help="indicator: fire when it becomes true (edge, default) or while true (level).")
@click.option("--profile", help="screen_pick: the screener profile.")
@click.option("--account", help="fill/halt: only this paper account (name or id).")
@click.option("--service", help="service_down: only this service.")
@click.option("--channel", "channels", multiple=True, default=("dashboard",), show_default=True,
              type=click.Choice(["dashboard", "slack", "discord", "email"]),
              help="Where to send it (repeat for several).")
@click.option("--cooldown", help="Quiet time after firing: 90s, 15m, 1h, 2d "
              "(default 1h for bar kinds, 0 for events).")
@click.option("--market-hours-only", is_flag=True, help="Fire only during NYSE regular hours.")
@click.option("--name", help="A name (default: a description of the rule).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def add_cmd(kind: str, channels: tuple[str, ...], cooldown: str | None,
            market_hours_only: bool, name: str | None, as_json: bool, **opts: Any) -> None:
    """Add an alert rule; prints its id.

    \b
    Examples:
      falcon alerts add --kind price_cross --ticker AAPL --above 200 --channel slack \\
          --channel dashboard --cooldown 1h
      falcon alerts add --kind pct_move --ticker TSLA --pct 3 --minutes 15 --channel discord
      falcon alerts add --kind indicator --ticker SPY --condition 'rsi(close, 14) < 30'
      falcon alerts add --kind screen_pick --profile momentum --channel email
    """
    from falcon.alerts.rules import add_rule
    from falcon.db.engine import transaction

    params = {k: v for k, v in opts.items() if v is not None}
    ctx = app()
    ctx.ready_engine()
    with transaction(ctx.sessions) as s:
        rule = add_rule(s, kind=kind, params=params, channels=channels, name=name,
                        cooldown=cooldown if cooldown is not None else
                        (3600 if kind in _BAR_KINDS else 0),
                        market_hours_only=market_hours_only)
        data = _rule_dict(rule)
    settings = _alert_settings()
    missing = [c for c in channels if not settings.configured(c)]
    if as_json:
        echo_json(data)
    else:
        click.echo(f"added alert rule {data['id']}: {data['name']}")
    for ch in missing:
        click.echo(f"warning: channel {ch} is not configured on this node", err=True)


@cli.command("list")
@click.option("--kind", type=click.Choice(_KIND_CHOICES), help="Only rules of this kind.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(kind: str | None, as_json: bool) -> None:
    """List alert rules.

    \b
    Example:
      falcon alerts list --kind price_cross --json
    """
    from falcon.alerts.rules import list_rules

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as s:
        rules = [_rule_dict(r) for r in list_rules(s, kind=kind)]
    if as_json:
        echo_json(rules)
        return
    echo_table(f"{len(rules)} rule(s)",
               ["id", "name", "kind", "channels", "cooldown", "hours", "on", "last fired"],
               [(r["id"], r["name"], r["kind"], ",".join(r["channels"]), f"{r['cooldown_s']}s",
                 "market" if r["market_hours_only"] else "any", "yes" if r["enabled"] else "no",
                 _local(r["last_fired_at"])) for r in rules])


@cli.command("remove")
@click.argument("rule_id", type=int)
def remove_cmd(rule_id: int) -> None:
    """Remove a rule (the alerts it fired stay in the history).

    \b
    Example:
      falcon alerts remove 3
    """
    from falcon.alerts.rules import remove_rule
    from falcon.db.engine import transaction

    ctx = app()
    ctx.ready_engine()
    with transaction(ctx.sessions) as s:
        remove_rule(s, rule_id)
    click.echo(f"removed alert rule {rule_id}")


@cli.command("enable")
@click.argument("rule_id", type=int)
@click.option("--off", is_flag=True, help="Disable instead.")
def enable_cmd(rule_id: int, off: bool) -> None:
    """Enable (or with --off disable) a rule.

    \b
    Example:
      falcon alerts enable 3 --off
    """
    from falcon.alerts.rules import set_enabled
    from falcon.db.engine import transaction

    ctx = app()
    ctx.ready_engine()
    with transaction(ctx.sessions) as s:
        set_enabled(s, rule_id, not off)
    click.echo(f"alert rule {rule_id} {'disabled' if off else 'enabled'}")


@cli.command("test")
@click.argument("rule_id", type=int)
@click.option("--queue-only", is_flag=True,
              help="Only queue it for `falcon alerts run`; do not send from here.")
def test_cmd(rule_id: int, queue_only: bool) -> None:
    """Send a test notification through the rule's channels and show what happened.

    Exits 1 when a channel failed (the delivery stays queued for the service).

    \b
    Example:
      falcon alerts test 3
    """
    from falcon.alerts.rules import test_rule
    from falcon.alerts.service import deliver_now
    from falcon.db.engine import transaction

    ctx = app()
    engine = ctx.ready_engine()
    with transaction(ctx.sessions) as s:
        event_id = test_rule(s, rule_id)
    if queue_only:
        click.echo(f"test alert #{event_id} queued")
        return
    results = deliver_now(engine, _alert_settings(), event_id)
    failed = False
    for channel, (status, error) in sorted(results.items()):
        failed = failed or status != "sent"
        click.echo(f"{channel:<10} {status}" + (f"  {error}" if error else ""))
    if failed:
        raise SystemExit(1)


@cli.command("history")
@click.option("--rule", "rule_id", type=int, help="Only alerts of this rule.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history_cmd(rule_id: int | None, limit: int, as_json: bool) -> None:
    """The alerts that fired, newest first, with bar-to-alert latency.

    \b
    Example:
      falcon alerts history --limit 20 --json
    """
    from sqlalchemy import select

    from falcon.db.models import AlertEvent

    ctx = app()
    ctx.ready_engine()
    stmt = select(AlertEvent).order_by(AlertEvent.id.desc()).limit(limit)
    if rule_id is not None:
        stmt = stmt.where(AlertEvent.rule_id == rule_id)
    with ctx.sessions() as s:
        events: list[dict[str, Any]] = [
            {"id": e.id, "rule_id": e.rule_id, "ticker": e.ticker, "message": e.message,
                   "latency_ms": e.latency_ms, "created_at": e.created_at}
                  for e in s.scalars(stmt)]
    if as_json:
        echo_json(events)
        return
    echo_table(None, ["id", "time", "rule", "ticker", "latency", "message"],
               [(e["id"], _local(e["created_at"]), e["rule_id"], e["ticker"],
                 "" if e["latency_ms"] is None else f"{e['latency_ms']:.1f} ms", e["message"])
                for e in events])


@cli.command("deliveries")
@click.option("--status", type=click.Choice(["pending", "sent", "dead"]), help="Only this state.")
@click.option("--retry", is_flag=True, help="Put the dead deliveries shown back in the queue.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def deliveries_cmd(status: str | None, retry: bool, limit: int, as_json: bool) -> None:
    """The outbox: each alert's delivery per channel, its tries and last error.

    \b
    Examples:
      falcon alerts deliveries --status dead
      falcon alerts deliveries --status dead --retry
    """
    from sqlalchemy import select

    from falcon.alerts.outbox import requeue_dead
    from falcon.db.engine import transaction
    from falcon.db.models import AlertDelivery

    ctx = app()
    ctx.ready_engine()
    stmt = select(AlertDelivery).order_by(AlertDelivery.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(AlertDelivery.status == status)
    with ctx.sessions() as s:
        rows: list[dict[str, Any]] = [
                {"id": d.id, "event_id": d.event_id, "channel": d.channel, "status": d.status,
                 "attempts": d.attempts, "next_attempt_at": d.next_attempt_at,
                 "delivered_at": d.delivered_at, "last_error": d.last_error}
                for d in s.scalars(stmt)]
    if retry:
        dead = [r["id"] for r in rows if r["status"] == "dead"]
        with transaction(ctx.sessions) as s:
            n = requeue_dead(s, dead)
        click.echo(f"re-queued {n} dead deliveries", err=True)
    if as_json:
        echo_json(rows)
        return
    echo_table(None, ["id", "alert", "channel", "status", "tries", "next try", "error"],
               [(r["id"], r["event_id"], r["channel"], r["status"], r["attempts"],
                 _local(r["next_attempt_at"]) if r["status"] == "pending" else "",
                 (r["last_error"] or "")[:80]) for r in rows])


@cli.command("run")
def run_cmd() -> None:
    """Run the delivery service until SIGTERM (exit 0): READY, WATCHDOG and STOPPING to systemd.

    \b
    Example:
      falcon alerts run
    """
    from falcon.alerts.service import run_delivery_service

    ctx = app()
    engine = ctx.ready_engine()
    raise SystemExit(run_delivery_service(engine, _alert_settings()))
