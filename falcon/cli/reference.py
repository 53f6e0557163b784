"""``falcon reference``: ticker reference data and stock splits (Massive API or CSV)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json


@click.group("reference")
def cli() -> None:
    """Reference data: names, types, sectors, market caps and splits.

    \b
    Examples:
      falcon reference refresh                  # from the Massive API (FALCON_MASSIVE_API_KEY)
      falcon reference load tickers.csv         # or from your own CSV files
      falcon reference show AAPL
    """


def _mirror_splits() -> None:
    from falcon.screener.reference import mirror_splits

    ctx = app()
    mirror_splits(ctx.settings, ctx.sessions)


@cli.command("refresh")
@click.option("--details", type=click.Choice(["missing", "all", "none"]), default="missing",
              show_default=True, help="Which tickers get a details call (market cap, sector).")
@click.option("--ticker", "tickers", multiple=True, help="Only these tickers' details.")
@click.option("--max-details", type=click.IntRange(min=0), help="Cap on details calls.")
@click.option("--splits-since", type=click.DateTime(["%Y-%m-%d"]),
              help="Fetch splits executed since this date (default: 30 days before the newest).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def refresh_cmd(details: str, tickers: tuple[str, ...], max_details: int | None,
                splits_since: datetime | None, as_json: bool) -> None:
    """Refresh tickers, details and splits from the Massive reference API.

    \b
    Examples:
      falcon reference refresh
      falcon reference refresh --details all --max-details 500
      falcon reference refresh --details none --splits-since 2000-01-01
    """
    from falcon.screener.reference import ReferenceClient, refresh

    ctx = app()
    ctx.ready_engine()
    client = ReferenceClient.from_settings(ctx.settings)
    say = (lambda text: click.echo(text, err=True)) if ctx.show_progress else None
    stats = refresh(client, ctx.sessions, details=details,  # type: ignore[arg-type]
                    tickers=list(tickers) or None, max_details=max_details,
                    splits_since=splits_since.date() if splits_since else None, on_progress=say)
    _mirror_splits()
    if as_json:
        echo_json({**stats.__dict__, "summary": stats.summary()})
    else:
        click.echo(stats.summary())
        for note in stats.notes:
            click.echo(f"note: {note}")


@cli.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["tickers", "splits"]),
              help="What the file holds (default: splits when it has execution_date).")
def load_cmd(path: Path, kind: str | None) -> None:
    """Load a tickers or splits CSV into the reference tables.

    Tickers: ticker plus any of name,type,exchange,sector,market_cap,active (only the columns
    present are updated). Splits: ticker,execution_date,split_from,split_to (a 4-for-1 split is
    1,4). A bad row rejects the whole file, naming its line and column.

    \b
    Examples:
      falcon reference load tickers.csv
      falcon reference load splits.csv
    """
    from falcon.data.reference import load_csv
    from falcon.data.store import Store

    ctx = app()
    ctx.ready_engine()
    what, count = load_csv(ctx.sessions, path, kind,  # type: ignore[arg-type]
                           Store.of(ctx.settings))
    click.echo(f"{path}: {count} {what} loaded")


@cli.command("show")
@click.argument("ticker")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(ticker: str, as_json: bool) -> None:
    """Show one ticker's cached reference data and splits.

    \b
    Example:
      falcon reference show AAPL --json
    """
    from sqlalchemy import select

    from falcon.db.models import Split, Ticker
    from falcon.errors import NotFound

    ctx = app()
    ctx.ready_engine()
    symbol = ticker.strip().upper()
    with ctx.sessions() as s:
        row = s.get(Ticker, symbol)
        splits = [{"execution_date": x.execution_date, "split_from": x.split_from,
                   "split_to": x.split_to}
                  for x in s.scalars(select(Split).where(Split.ticker == symbol)
                                     .order_by(Split.execution_date))]
    if row is None and not splits:
        raise NotFound(f"no reference data for {symbol} "
                       "(run `falcon reference refresh` or `falcon reference load`)")
    doc = {"ticker": symbol, "name": row.name if row else None, "type": row.type if row else None,
           "exchange": row.exchange if row else None, "sector": row.sector if row else None,
           "market_cap": row.market_cap if row else None,
           "active": row.active if row else None,
           "updated_at": row.updated_at if row else None, "splits": splits}
    if as_json:
        echo_json(doc)
        return
    for key in ("ticker", "name", "type", "exchange", "sector", "market_cap", "active",
                "updated_at"):
        click.echo(f"{key:>11}: {'' if doc[key] is None else doc[key]}")
    for sp in splits:
        click.echo(f"      split: {sp['execution_date']} {sp['split_from']:g}->{sp['split_to']:g}")
