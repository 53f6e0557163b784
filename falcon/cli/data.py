"""``falcon data``: import, sync and inspect market data."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json, echo_table, progress
from falcon.errors import ImportRejected


class _Date(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date (use YYYY-MM-DD)", param, ctx)


DATE = _Date()
KIND = click.Choice(["day", "minute"])


def _raise_if_rejected(results: list[Any]) -> None:
    rejected = [r for r in results if r.status == "rejected"]
    if rejected:
        names = ", ".join(r.name for r in rejected[:3])
        more = "" if len(rejected) <= 3 else f" and {len(rejected) - 3} more"
        raise ImportRejected(f"{len(rejected)} of {len(results)} files rejected: {names}{more}")


@click.group("data")
def cli() -> None:
    """Market data: flat-file import and sync, the bundled sample, store status.

    \b
    Examples:
      falcon data sample
      falcon data import ~/flatfiles/us_stocks_sip/day_aggs_v1/2024/01/
      falcon data sync --start 2024-01-02 --end 2024-01-31
      falcon data status
    """


@cli.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--kind", type=KIND, help="day or minute, when the path does not say.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def import_cmd(paths: tuple[Path, ...], kind: str | None, as_json: bool) -> None:
    """Import Massive flat files (.csv.gz or .csv; folders are searched) into the store.

    Files already imported with the same checksum are left alone; bad rows are quarantined in
    market_data/rejects/. Exits non-zero when a file was rejected.

    \b
    Example:
      falcon data import us_stocks_sip/day_aggs_v1/2024/01/2024-01-02.csv.gz
      falcon data import --kind minute ./minute-files/
    """
    from falcon.data.importer import expand_paths, import_files

    ctx = app()
    ctx.ready_engine()
    files = expand_paths(paths)
    with progress("importing", len(files), enabled=ctx.show_progress and not as_json) as bar:

        def done(result: Any) -> None:
            bar.advance()
            if not as_json:
                click.echo(result.line())

        report = import_files(files, store=ctx.settings, sessions=ctx.sessions, kind=kind,
                              on_file=done, raise_on_reject=False)
    if as_json:
        echo_json({"files": [f.as_dict() for f in report.files]})
    _raise_if_rejected(report.files)


@cli.command("sync")
@click.option("--start", required=True, type=DATE, help="First session (YYYY-MM-DD).")
@click.option("--end", type=DATE, help="Last session (default: the last completed one).")
@click.option("--kind", type=KIND, default="day", show_default=True, help="Bars to fetch.")
@click.option("--force", is_flag=True, help="Download sessions the store already has.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sync_cmd(start: date, end: date | None, kind: str, force: bool, as_json: bool) -> None:
    """Download missing sessions' flat files from the S3 endpoint and import them.

    Needs FALCON_S3_ACCESS_KEY_ID and FALCON_S3_SECRET_ACCESS_KEY in the environment. Weekends and
    holidays are skipped; a session not yet published is reported, not an error.

    \b
    Example:
      falcon data sync --start 2024-01-02 --end 2024-03-28
      falcon data sync --start 2024-06-03 --kind minute
    """
    from falcon import calendar
    from falcon.data.sync import sync

    ctx = app()
    ctx.ready_engine()
    last = end or calendar.last_completed_session()
    with progress(f"sync {kind}", None, enabled=ctx.show_progress and not as_json) as bar:

        def advance(day: date, outcome: str) -> None:
            bar.describe(f"{kind} {day} {outcome}")
            bar.advance()

        report = sync(ctx.settings, ctx.sessions, start=start, end=last, kind=kind, force=force,
                      on_progress=advance)
    results = report.imports.files if report.imports else []
    if as_json:
        echo_json(report.as_dict())
    else:
        for result in results:
            click.echo(result.line())
        for day in report.missing:
            click.echo(f"{day}: not in the bucket (not published yet?)")
        click.echo(
            f"sync {kind} {start}..{last}: {len(report.planned)} sessions, "
            f"{len(report.skipped)} already imported, {len(report.downloaded)} downloaded, "
            f"{len(report.missing)} missing"
        )
    _raise_if_rejected(results)


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_cmd(as_json: bool) -> None:
    """Show tickers, first and last session per kind, and sessions missing per the NYSE calendar.

    \b
    Example:
      falcon data status --json | jq '.kinds[] | {kind, missing_count}'
    """
    from falcon.data.status import store_status
    from falcon.data.store import Store

    ctx = app()
    store = Store.of(ctx.settings)
    kinds = store_status(store)
    if as_json:
        echo_json({"store": str(store.root), "kinds": [k.as_dict() for k in kinds]})
        return
    rows = []
    for k in kinds:
        shown = ", ".join(str(d) for d in k.missing[:5]) + (" ..." if len(k.missing) > 5 else "")
        rows.append([k.kind, k.tickers, k.sessions, k.first_date or "-", k.last_date or "-",
                     f"{len(k.missing)} {shown}".strip()])
    echo_table(f"market data in {store.root}",
               ["kind", "tickers", "sessions", "first", "last", "missing"], rows)


@cli.command("sample")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sample_cmd(as_json: bool) -> None:
    """Load the bundled sample of real market data (daily and minute bars, tickers, splits).

    Runs through the same importer as Massive files; running it again changes nothing.

    \b
    Example:
      falcon data sample && falcon data status
    """
    from falcon.data.sample import load_sample

    ctx = app()
    ctx.ready_engine()
    started = datetime.now()
    report = load_sample(ctx.settings, ctx.sessions,
                         on_file=None if as_json else lambda r: click.echo(r.line()))
    files = report.imports.files
    if as_json:
        echo_json({"files": [f.as_dict() for f in files], "tickers": report.tickers,
                   "splits": report.splits})
    else:
        took = (datetime.now() - started).total_seconds()
        click.echo(f"sample: {len(files)} files, {report.tickers} tickers, "
                   f"{report.splits} splits ({took:.1f}s)")


@cli.group("reference", hidden=True)
def reference() -> None:
    """Reference data from CSV files (an alias of `falcon reference load`).

    \b
    Example:
      falcon reference load tickers.csv
    """


@reference.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--what", type=click.Choice(["auto", "tickers", "splits"]), default="auto",
              show_default=True, help="What the file holds (auto: from its columns).")
@click.pass_context
def reference_load(ctx: click.Context, path: Path, what: str) -> None:
    """Load a tickers or splits CSV: the same as `falcon reference load` (kept for scripts).

    \b
    Example:
      falcon reference load splits.csv
    """
    from falcon.cli.reference import load_cmd

    ctx.invoke(load_cmd, path=path, kind=None if what == "auto" else what)
