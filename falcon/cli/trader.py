"""``falcon trader``: the long-running paper trader (systemd unit falcon-trader)."""

from __future__ import annotations

from typing import Any

import click

from falcon.cli.context import app
from falcon.cli.paper import DEFAULT_ACCOUNT, LIMIT_KEYS, limit_options


@click.group("trader")
def cli() -> None:
    """The paper trader daemon: minute bars from Massive, orders into a paper account.

    \b
    Example:
      falcon trader run --account main
    """


@cli.command("run")
@click.option("--account", default=DEFAULT_ACCOUNT, show_default=True, help="Paper account.")
@click.option("--strategy", "strategies", multiple=True,
              help="Strategy to run (default: every strategy with status 'paper').")
@click.option("--tickers", help="Comma-separated tickers to watch besides positions and picks.")
@click.option("--cash", type=click.FloatRange(min=0, min_open=True),
              help="Starting cash if the account does not exist yet.")
@click.option("--no-picks", is_flag=True, help="Do not trade the screener's picks.")
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Seconds between polls of the Massive API.")
@limit_options
def run_cmd(account: str, strategies: tuple[str, ...], tickers: str | None, cash: float | None,
            no_picks: bool, poll_s: float, **kwargs: Any) -> None:
    """Trade in NYSE sessions until SIGTERM (exit 0), telling systemd READY, WATCHDOG, STOPPING.

    One JSON line per decision on stdout (journald). Resumes from the database after a crash.

    \b
    Example:
      FALCON_MASSIVE_API_KEY=... falcon trader run --account main --tickers AAPL,MSFT
    """
    from falcon.paper.runner import live

    ctx = app()
    ctx.ready_engine()
    limits = {k: v for k, v in kwargs.items() if k in LIMIT_KEYS and v is not None}
    names = [t.strip().upper() for t in (tickers or "").split(",") if t.strip()] or None
    code = live(ctx.settings, ctx.sessions, account=account, strategies=list(strategies),
                tickers=names,
                cash=cash if cash is not None else ctx.settings.trading.starting_cash,
                picks=not no_picks, limits=limits, poll_s=poll_s, quiet=ctx.quiet)
    raise SystemExit(code)
