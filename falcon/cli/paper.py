"""``falcon paper``: paper accounts, their risk limits, the kill switch, and replays."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import click

from falcon.cli.context import app

DEFAULT_ACCOUNT = "default"


def account_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--account NAME`` (default ``default``)."""
    return click.option("--account", "account", default=DEFAULT_ACCOUNT, show_default=True,
                        help="Paper account name.")(f)


def limit_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The risk-limit flags shared by replay, trader run and limits set."""
    options = [
        click.option("--max-positions", "max_open_positions", type=click.IntRange(min=1),
                     help="Maximum open positions (default 10)."),
        click.option("--max-position-pct", type=click.FloatRange(0, 1, min_open=True),
                     help="Largest position, fraction of equity (default 0.20)."),
        click.option("--max-sector-pct", type=click.FloatRange(0, 1, min_open=True),
                     help="Exposure per sector, fraction of equity (default 0.40)."),
        click.option("--max-strategy-pct", type=click.FloatRange(0, 1, min_open=True),
                     help="Exposure per strategy, fraction of equity (default 0.50)."),
        click.option("--daily-loss-pct", type=click.FloatRange(0, 1, min_open=True),
                     help="Loss in a session that stops new entries for the day (default 0.03)."),
        click.option("--max-drawdown-pct", type=click.FloatRange(0, 1, min_open=True),
                     help="Drawdown from the peak that halts the account (default 0.20)."),
        click.option("--pick-risk-pct", type=click.FloatRange(0, 1, min_open=True),
                     help="Equity risked per screener pick (default 0.01)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


LIMIT_KEYS = ("max_open_positions", "max_position_pct", "max_sector_pct", "max_strategy_pct",
              "daily_loss_pct", "max_drawdown_pct", "pick_risk_pct")


@click.group("paper")
def cli() -> None:
    """Paper accounts: status, limits, the kill switch and replays through the trader.

    \b
    Examples:
      falcon paper account create main --cash 100000
      falcon paper status --account main
      falcon paper halt --account main --flatten --reason "news"
      falcon paper replay --start 2019-01-02 --end 2019-12-31 --strategy sma_cross --tickers AAPL
    """


@cli.group("account")
def account_group() -> None:
    """Create and list paper accounts.

    \b
    Example:
      falcon paper account create main --cash 50000
    """


@account_group.command("create")
@click.argument("name")
@click.option("--cash", type=click.FloatRange(min=0, min_open=True),
              help="Starting cash (default trading.starting_cash).")
@click.option("--long-short", is_flag=True, help="Allow short selling (default long only).")
def account_create(name: str, cash: float | None, long_short: bool) -> None:
    """Create an account with its opening deposit in the ledger.

    \b
    Example:
      falcon paper account create main --cash 100000
    """
    from falcon.db.engine import transaction
    from falcon.paper.persist import create_account

    ctx = app()
    ctx.ready_engine()
    amount = cash if cash is not None else ctx.settings.trading.starting_cash
    with transaction(ctx.sessions) as s:
        account = create_account(s, name, amount, long_only=not long_short, actor="cli")
        click.echo(f"created paper account {account.name} (id {account.id}) with {amount:,.2f}")


@account_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def account_list(as_json: bool) -> None:
    """List accounts with cash and halt state.

    \b
    Example:
      falcon paper account list --json
    """
    from sqlalchemy import select

    from falcon.cli.output import echo_json, echo_table
    from falcon.db.models import PaperAccount

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as s:
        rows = [
            {"id": a.id, "name": a.name, "cash": a.cash, "starting_cash": a.starting_cash,
             "halted": a.halted, "last_bar_ts": a.last_bar_ts}
            for a in s.scalars(select(PaperAccount).order_by(PaperAccount.id))
        ]
    if as_json:
        echo_json(rows)
    else:
        echo_table("paper accounts", list(rows[0]) if rows else ["id"],
                   [list(r.values()) for r in rows])


@cli.command("status")
@account_option
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def status_cmd(account: str, as_json: bool) -> None:
    """Account, positions, open orders, held entries, risk limits and halt state.

    Held entries are entries the trader keeps in memory only, with no order row: an entry
    refused again and again for the same cause (retried quietly at each open), or signalled
    while the strategy's own position is open.

    \b
    Example:
      falcon paper status --account main --json
    """
    from zoneinfo import ZoneInfo

    from falcon.cli.output import echo_json, echo_table
    from falcon.paper.admin import HELD_ENTRIES_HELP, account_status
    from falcon.paper.service import account_limits

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as s:
        limits = account_limits(s, account, None)
        report = account_status(s, account, limits)
    if as_json:
        echo_json(report)
        return
    a = report["account"]
    state = f"HALTED ({report['halt_reason']})" if report["halted"] else "trading"
    click.echo(f"{a['name']}: cash {a['cash']:,.2f}  equity {a['equity']:,.2f}  "
               f"realized {a['realized_pnl']:,.2f}  fees {a['fees']:,.2f}  {state}")
    new_york = ZoneInfo("America/New_York")  # stored in UTC, shown in the exchange's time
    last = a["last_bar_ts"]
    if last is not None:
        last = last.astimezone(new_york).strftime("%Y-%m-%d %H:%M %Z")
    click.echo(f"last bar: {last or 'none'}")
    echo_table("positions", ["ticker", "qty", "avg_cost", "mark", "unrealized", "strategy"],
               [[p["ticker"], p["qty"], f"{p['avg_cost']:.4f}", p["mark"],
                 f"{p['unrealized_pnl']:.2f}", p["strategy"]] for p in report["positions"]])
    echo_table("open orders", ["id", "ticker", "side", "type", "qty", "limit", "stop", "status"],
               [[o["id"], o["ticker"], o["side"], o["type"], o["qty"], o["limit"], o["stop"],
                 o["status"]] for o in report["open_orders"]])
    if report["held_entries_warning"]:
        click.echo(f"warning: {report['held_entries_warning']}", err=True)
    held = report["held_entries"]
    if held:
        def bar_time(iso: str | None) -> str:
            if iso is None:
                return ""
            return datetime.fromisoformat(iso).astimezone(new_york).strftime("%Y-%m-%d %H:%M")

        click.echo(HELD_ENTRIES_HELP)
        echo_table("Held entries (quiet retries)",
                   ["strategy", "ticker", "side", "held for", "refusals", "first refused",
                    "last refused", "next open"],
                   [[h["strategy"], h["ticker"], h["side"],
                     h["cause"] if h["kind"] == "quiet_retry" else "position open",
                     h["count"], bar_time(h["first_ts"]), bar_time(h["last_ts"]),
                     "retry" if h["kind"] == "quiet_retry" and h["waiting"]
                     else "if flat" if h["kind"] == "if_flat" else ""]
                    for h in held])
    click.echo("limits: " + ", ".join(f"{k}={v}" for k, v in report["limits"].items()))


@cli.command("halt")
@account_option
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.option("--flatten", is_flag=True, help="Also close every position at the next bar.")
def halt_cmd(account: str, reason: str, flatten: bool) -> None:
    """Kill switch: stop new entries (the trader sees it at its next bar).

    \b
    Example:
      falcon paper halt --account main --flatten --reason "broker outage drill"
    """
    from falcon.db.engine import transaction
    from falcon.paper.admin import halt_account

    ctx = app()
    ctx.ready_engine()
    with transaction(ctx.sessions) as s:
        ids = halt_account(s, account, reason=reason, actor="cli", flatten=flatten,
                           now=datetime.now(UTC))
    click.echo(f"{account}: halted" + (f", {len(ids)} position(s) to flatten" if flatten else ""))


@cli.command("resume")
@account_option
@click.option("--reason", default="resumed from the CLI", help="Why (recorded).")
def resume_cmd(account: str, reason: str) -> None:
    """Lift a halt.

    \b
    Example:
      falcon paper resume --account main --reason "checked"
    """
    from falcon.db.engine import transaction
    from falcon.paper.admin import resume_account

    ctx = app()
    ctx.ready_engine()
    with transaction(ctx.sessions) as s:
        resume_account(s, account, reason=reason, actor="cli")
    click.echo(f"{account}: trading")


@cli.group("limits")
def limits_group() -> None:
    """Show or change an account's risk limits (changes go to the audit log).

    \b
    Example:
      falcon paper limits set --account main --max-positions 5 --daily-loss-pct 0.02
    """


@limits_group.command("show")
@account_option
def limits_show(account: str) -> None:
    """Print the limits in force.

    \b
    Example:
      falcon paper limits show --account main
    """
    from falcon.cli.output import echo_json
    from falcon.paper.service import account_limits

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as s:
        echo_json(account_limits(s, account, None).as_dict())


@limits_group.command("set")
@account_option
@limit_options
def limits_set(account: str, **kwargs: Any) -> None:
    """Change limits; the trader picks them up when it starts.

    \b
    Example:
      falcon paper limits set --account main --max-sector-pct 0.3
    """
    from falcon.cli.output import echo_json
    from falcon.db.engine import transaction
    from falcon.paper.persist import find_account
    from falcon.paper.service import set_limits

    values = {k: v for k, v in kwargs.items() if v is not None}
    ctx = app()
    ctx.ready_engine()
    with transaction(ctx.sessions) as s:
        find_account(s, account)
        echo_json(set_limits(s, account, values, actor="cli").as_dict())


@cli.command("order")
@account_option
@click.argument("side", type=click.Choice(["buy", "sell"]))
@click.argument("ticker")
@click.argument("qty", type=click.IntRange(min=1))
@click.option("--limit", "limit_price", type=float, help="Limit price (a limit order).")
@click.option("--stop", "stop_price", type=float, help="Stop price (a stop or stop-limit order).")
@click.option("--gtc", is_flag=True, help="Good till canceled (default: day).")
def order_cmd(account: str, side: str, ticker: str, qty: int, limit_price: float | None,
              stop_price: float | None, gtc: bool) -> None:
    """Queue a manual order; the trader submits it at the ticker's next bar.

    \b
    Example:
      falcon paper order --account main buy AAPL 10 --limit 180
    """
    from falcon.db.engine import transaction
    from falcon.domain.orders import OrderType, Side, TimeInForce
    from falcon.paper.admin import submit_manual_order

    kind = OrderType.MARKET
    if limit_price is not None and stop_price is not None:
        kind = OrderType.STOP_LIMIT
    elif limit_price is not None:
        kind = OrderType.LIMIT
    elif stop_price is not None:
        kind = OrderType.STOP
    ctx = app()
    ctx.ready_engine()
    with transaction(ctx.sessions) as s:
        row = submit_manual_order(
            s, account, ticker=ticker.upper(), side=Side(side), qty=qty, kind=kind,
            limit_price=limit_price, stop_price=stop_price,
            tif=TimeInForce.GTC if gtc else TimeInForce.DAY, actor="cli", now=datetime.now(UTC))
    click.echo(f"order {row.client_order_id}: {row.status}"
               + (f" ({row.reject_reason})" if row.reject_reason else ""))


@cli.command("replay")
@account_option
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First session.")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), required=True, help="Last session.")
@click.option("--strategy", "strategies", multiple=True,
              help="Strategy name (stored or built-in); repeatable. Default: those in paper.")
@click.option("--tickers", help="Comma-separated tickers (default: each strategy's universe).")
@click.option("--kind", type=click.Choice(["day", "minute"]), default="day", show_default=True)
@click.option("--param", "params", multiple=True, help="Strategy parameter NAME=VALUE.")
@click.option("--cash", type=click.FloatRange(min=0, min_open=True),
              help="Starting cash when the account is created (default trading.starting_cash).")
@click.option("--no-picks", is_flag=True, help="Ignore screener picks.")
@click.option("--margin", type=click.IntRange(min=0), default=50, show_default=True,
              help="Bars of history beyond each strategy's warm-up in its rolling window.")
@limit_options
def replay_cmd(account: str, start: datetime, end: datetime, strategies: tuple[str, ...],
               tickers: str | None, kind: str, params: tuple[str, ...], cash: float | None,
               no_picks: bool, margin: int, **kwargs: Any) -> None:
    """Replay stored bars through the trader, bar by bar, as if live (resumable).

    Creates the account if needed; a second run continues after the account's last bar, so a
    replay killed at any point and started again ends exactly where an uninterrupted one does.
    SIGTERM finishes the bar in hand and exits 0.

    \b
    Example:
      falcon paper replay --start 2019-01-02 --end 2019-12-31 --strategy sma_cross \\
          --tickers AAPL --account bt --cash 10000 --max-position-pct 1
    """
    from falcon.paper.runner import replay

    limits = {k: v for k, v in kwargs.items() if k in LIMIT_KEYS and v is not None}
    values: dict[str, float] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--param")
        values[key] = float(value)
    ctx = app()
    ctx.ready_engine()
    stats = replay(
        ctx.settings, ctx.sessions, account=account, start=_day(start), end=_day(end),
        strategies=list(strategies), tickers=_tickers(tickers), kind=kind, params=values,
        cash=cash if cash is not None else ctx.settings.trading.starting_cash,
        picks=not no_picks, margin=margin, limits=limits, quiet=ctx.quiet,
    )
    click.echo(f"replayed {stats.batches} batch(es), {stats.bars} bar(s), {stats.events} "
               f"order event(s){' (stopped early)' if stats.stopped_early else ''}", err=True)


def _day(value: datetime) -> date:
    return value.date()


def _tickers(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [t.strip().upper() for t in text.split(",") if t.strip()]
