"""``falcon backtest``: run, optimise and walk forward strategies on stored bars; list the runs.

The commands build the same request a job carries (:class:`falcon.backtest.jobs.Request`), then
run it here or, with ``--queue``, hand it to the workers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json, echo_table, progress

F = TypeVar("F", bound=Callable[..., Any])

_HEADLINE = ("return_pct", "cagr_pct", "max_drawdown_pct", "sharpe", "sortino", "calmar",
             "trades", "win_rate_pct", "profit_factor", "expectancy", "avg_trade_pct",
             "exposure_pct", "buy_and_hold_return_pct", "final_equity")
_CSV_TIME = "%Y-%m-%dT%H:%M:%S%:z"  # ISO 8601 in UTC, as the JSON output writes times
_OBJECTIVES = ("sharpe", "sortino", "calmar", "return_pct", "cagr_pct", "final_equity",
               "profit_factor", "expectancy", "win_rate_pct", "avg_trade_pct", "max_drawdown_pct")


def _param(text: str) -> tuple[str, float]:
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise click.BadParameter(f"expected NAME=VALUE, got {text!r}", param_hint="--param")
    try:
        value: float = int(raw) if raw.strip().lstrip("-").isdigit() else float(raw)
    except ValueError as exc:
        raise click.BadParameter(f"{name}: {raw!r} is not a number", param_hint="--param") from exc
    return name.strip(), value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.3f}"
    return "" if value is None else str(value)


# --- option sets -----------------------------------------------------------------------------


def strategy_options(func: F) -> F:
    """SPEC_FILE or --strategy NAME, with --param and --direction."""
    for option in reversed([
        click.argument("spec_file", required=False, type=click.Path(dir_okay=False)),
        click.option("--strategy", "-s", "strategy", metavar="NAME",
                     help="A built-in strategy (falcon strategy list) or a stored one's name."),
        click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
                     help="Override a parameter (repeatable)."),
        click.option("--direction", type=click.Choice(["long_only", "long_short"]),
                     help="Trade one side or both."),
    ]):
        func = option(func)
    return func


def data_options(func: F) -> F:
    """--symbols, --start, --end."""
    day = click.DateTime(formats=["%Y-%m-%d"])
    for option in reversed([
        click.option("--symbols", metavar="A,B",
                     help="Comma-separated tickers (default: the strategy's universe)."),
        click.option("--start", type=day, help="First session traded (warm-up is read before)."),
        click.option("--end", type=day, help="Last session traded (inclusive)."),
    ]):
        func = option(func)
    return func


def cost_options(func: F) -> F:
    """--cash, --commission, --commission-per-share, --slippage-bps (default: settings)."""
    for option in reversed([
        click.option("--cash", type=click.FloatRange(min=0, min_open=True),
                     help="Starting cash (default trading.starting_cash)."),
        click.option("--commission", type=click.FloatRange(0, 0.1),
                     help="Commission, fraction of notional per side (0.002 = 0.2 %)."),
        click.option("--commission-per-share", type=click.FloatRange(min=0),
                     help="Commission per share per side."),
        click.option("--slippage-bps", type=click.FloatRange(0, 1000),
                     help="Slippage against the trader, basis points."),
    ]):
        func = option(func)
    return func


def run_options(func: F) -> F:
    """--json, --no-store, --queue."""
    for option in reversed([
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
        click.option("--no-store", is_flag=True, help="Do not store the run in the database."),
        click.option("--queue", is_flag=True,
                     help="Submit a job for the workers instead of running here."),
    ]):
        func = option(func)
    return func


def search_options(func: F) -> F:
    """--grid, --random, --seed, --objective, --constraint, --jobs, --top."""
    for option in reversed([
        click.option("--grid", "grid", multiple=True, metavar="NAME=LO:HI:STEP",
                     help="Values of a parameter: LO:HI:STEP (HI included) or V1,V2 (repeat)."),
        click.option("--random", "sample", type=click.IntRange(min=1), metavar="N",
                     help="Try N random points of the grid (of the declared ranges "
                          "without --grid)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of --random."),
        click.option("--objective", type=click.Choice(_OBJECTIVES), default="sharpe",
                     show_default=True, help="What to maximise (max_drawdown_pct: minimise)."),
        click.option("--constraint", "constraints", multiple=True, metavar="'A < B'",
                     help="Skip candidates that break it, e.g. 'fast < slow' (repeatable)."),
        click.option("--jobs", type=click.IntRange(min=1),
                     help="Processes (default: every core for large searches)."),
    ]):
        func = option(func)
    return func


# --- the request -----------------------------------------------------------------------------


def _request(kind: str, opts: dict[str, Any]) -> Any:
    from falcon.backtest.jobs import Request, symbols_arg
    from falcon.strategy import load_document

    spec_file, strategy = opts.get("spec_file"), opts.get("strategy")
    if (spec_file is None) == (strategy is None):
        raise click.UsageError("give a SPEC_FILE or --strategy NAME (one of them)")
    payload: dict[str, Any] = {
        "params": dict(_param(p) for p in opts.get("params", ())),
        "direction": opts.get("direction"),
        "symbols": list(symbols_arg(opts.get("symbols"))),
    }
    if spec_file is not None:
        payload["spec"] = load_document(Path(spec_file))
    else:
        payload["strategy"] = strategy
    for key in ("start", "end"):
        value = opts.get(key)
        payload[key] = value.date().isoformat() if isinstance(value, datetime) else None
    for key in ("cash", "commission", "commission_per_share", "slippage_bps"):
        payload[key] = opts.get(key)
    if kind != "backtest":
        grid: dict[str, str] = {}
        for item in opts.get("grid", ()):
            name, sep, values = item.partition("=")
            if not sep:
                raise click.BadParameter(f"expected NAME=LO:HI:STEP, got {item!r}",
                                         param_hint="--grid")
            grid[name.strip()] = values.strip()
        payload.update(grid=grid, random=opts.get("sample"), seed=opts.get("seed"),
                       objective=opts.get("objective"),
                       constraints=list(opts.get("constraints", ())), jobs=opts.get("jobs"))
    if kind == "walkforward":
        payload.update({k: opts.get(k) for k in ("train", "test", "step", "anchored")})
    return Request.from_payload(kind, {k: v for k, v in payload.items() if v is not None})


def _execute(kind: str, request: Any, *, no_store: bool, queue: bool,
             as_json: bool) -> tuple[dict[str, Any], Any] | None:
    """Run the request (with a progress bar) or queue it; None when queued."""
    from falcon.backtest.jobs import execute, resolve_request
    from falcon.strategy import builtin_names

    ctx = app()
    needs_db = queue or not no_store or request.strategy not in builtin_names()
    sessions = None
    if needs_db:
        ctx.ready_engine()
        sessions = ctx.sessions
    if queue:
        from falcon.jobs.queue import submit

        resolve_request(request, sessions)  # an unknown strategy fails here, not in a worker
        with ctx.sessions.begin() as session:
            job_id = submit(session, kind, request.payload())
        if as_json:
            echo_json({"job_id": job_id, "kind": kind, "status": "queued"})
        else:
            click.echo(f"job {job_id} queued ({kind}): `falcon jobs show {job_id}`")
        return None
    with progress(kind, total=100, enabled=ctx.show_progress) as bar:
        done = 0.0

        def report(fraction: float, note: str) -> None:
            nonlocal done
            bar.describe(note)
            bar.advance(max(0.0, fraction * 100 - done))
            done = max(done, fraction * 100)

        return execute(ctx.settings, sessions, request, store=not no_store, progress=report)


# --- commands --------------------------------------------------------------------------------


@click.group("backtest")
def cli() -> None:
    """Backtest strategies on stored bars: run, optimise, walk forward, check for look-ahead.

    \b
    Examples:
      falcon backtest run --strategy sma_cross --symbols AAPL,MSFT --start 2016-01-04
      falcon backtest optimize -s sma_cross --symbols AAPL --grid fast=5:20:5 --grid slow=20:60:10
      falcon backtest list
    """


@cli.command("run")
@strategy_options
@data_options
@cost_options
@run_options
@click.option("--trades-csv", type=click.Path(dir_okay=False), help="Write the trades to CSV.")
@click.option("--equity-csv", type=click.Path(dir_okay=False),
              help="Write the equity curve to CSV.")
def run_cmd(as_json: bool, no_store: bool, queue: bool, trades_csv: str | None,
            equity_csv: str | None, **opts: Any) -> None:
    """Backtest one strategy and store the run (spec, parameters, trades, equity curve).

    Signals are computed on each bar's close and fill at the next open; indicators warm up on
    the bars before --start, so the first session is already tradeable.

    \b
    Example:
      falcon backtest run --strategy sma_cross --param fast=5 --symbols AAPL,MSFT \\
          --start 2016-01-04 --end 2018-12-31 --cash 10000 --commission 0.002 --json
    """
    import polars as pl

    request = _request("backtest", opts)
    done = _execute("backtest", request, no_store=no_store, queue=queue, as_json=as_json)
    if done is None:
        return
    summary, outcome = done
    result = outcome.result
    if trades_csv:
        trades = pl.concat([result.trades, result.open_trades], how="vertical_relaxed")
        trades.write_csv(trades_csv, datetime_format=_CSV_TIME)
    if equity_csv:
        result.equity.write_csv(equity_csv, datetime_format=_CSV_TIME)
    if as_json:
        echo_json(summary)
        return
    echo_table(f"{summary['strategy']} on {', '.join(summary['symbols'])} "
               f"{summary['start']}..{summary['end']}", ["metric", "value"],
               [(k, _fmt(summary.get(k))) for k in _HEADLINE])
    stored = f"run {summary['run_id']} stored" if summary["run_id"] else "not stored"
    click.echo(f"{stored}; {summary['bars']} bars, warm-up {summary['warmup_bars']} bars "
               f"from {summary['warmup_from'] or 'the first bar'}, "
               f"{summary['open_trades']} position(s) open at the end")


@cli.command("optimize")
@strategy_options
@data_options
@cost_options
@search_options
@run_options
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Ranked candidates to print.")
def optimize_cmd(as_json: bool, no_store: bool, queue: bool, top: int, **opts: Any) -> None:
    """Search parameters (a grid, or --random points) for the best --objective.

    Every candidate is a full backtest over the same bars; candidates outside a parameter's
    declared min/max are reported as errors, those breaking a --constraint are skipped.

    \b
    Example:
      falcon backtest optimize --strategy sma_cross --symbols AAPL,MSFT \\
          --grid fast=5:20:5 --grid slow=20:60:10 --constraint 'fast < slow' \\
          --objective sharpe --jobs 2
    """
    request = _request("optimize", opts)
    done = _execute("optimize", request, no_store=no_store, queue=queue, as_json=as_json)
    if done is None:
        return
    summary, search = done
    if as_json:
        echo_json(summary)
        return
    objective = summary["objective"]
    names = list(summary["grid"])
    echo_table(f"{summary['strategy']}: best by {objective}",
               [*names, objective, "return_pct", "max_drawdown_pct", "trades"],
               [(*[t.params.get(n) for n in names], _fmt(t.score(objective)),
                 _fmt(t.metrics.get("return_pct")), _fmt(t.metrics.get("max_drawdown_pct")),
                 t.metrics.get("trades")) for t in search.ranked[:top]])
    stored = f"run {summary['run_id']} stored" if summary["run_id"] else "not stored"
    click.echo(f"{stored}; {summary['ran']} ran, {summary['skipped']} skipped, "
               f"{summary['errors']} errors; best {summary['best_params']}")


@cli.command("walkforward")
@strategy_options
@data_options
@cost_options
@search_options
@run_options
@click.option("--train", type=click.IntRange(min=1), required=True,
              help="In-sample sessions per window (504 = two years).")
@click.option("--test", type=click.IntRange(min=1), required=True,
              help="Out-of-sample sessions per window.")
@click.option("--step", type=click.IntRange(min=1), help="Sessions between windows "
              "(default --test; never less).")
@click.option("--anchored", is_flag=True, help="Every in-sample window starts at the start.")
def walkforward_cmd(as_json: bool, no_store: bool, queue: bool, **opts: Any) -> None:
    """Optimise on rolling in-sample windows, trade each next window with the winner.

    Prints each window's in-sample and out-of-sample objective, the chained out-of-sample
    figures and the walk-forward efficiency (out-of-sample / in-sample).

    \b
    Example:
      falcon backtest walkforward -s sma_cross --symbols AAPL,MSFT --start 2014-01-02 \\
          --grid fast=5:20:5 --grid slow=20:60:20 --train 504 --test 126
    """
    request = _request("walkforward", opts)
    done = _execute("walkforward", request, no_store=no_store, queue=queue, as_json=as_json)
    if done is None:
        return
    summary, _ = done
    if as_json:
        echo_json(summary)
        return
    objective = summary["objective"]
    echo_table(f"{summary['strategy']}: walk-forward by {objective}",
               ["window", "out-of-sample", "params", f"IS {objective}",
                f"OOS {objective}", "OOS return %", "efficiency"],
               [(f["index"], f"{f['test_start']}..{f['test_end']}",
                 " ".join(f"{k}={v}" for k, v in (f.get("best_params") or {}).items()),
                 _fmt((f.get("in_sample") or {}).get(objective)),
                 _fmt((f.get("out_of_sample") or {}).get(objective)),
                 _fmt((f.get("out_of_sample") or {}).get("return_pct")),
                 _fmt(f.get("efficiency"))) for f in summary["folds"]])
    agg = summary["aggregate"]
    stored = f"run {summary['run_id']} stored" if summary["run_id"] else "not stored"
    click.echo(f"{stored}; out-of-sample: return {_fmt(agg.get('return_pct'))}%, "
               f"{objective} {_fmt(agg.get(objective))}, max drawdown "
               f"{_fmt(agg.get('max_drawdown_pct'))}%; efficiency "
               f"{_fmt(summary['efficiency'])} ({objective}), "
               f"{_fmt(summary['efficiency_cagr'])} (CAGR)")


@cli.command("lookahead")
@strategy_options
@data_options
@click.option("--cut-points", type=click.IntRange(min=1), default=20, show_default=True,
              help="Times the data is cut at.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def lookahead_cmd(cut_points: int, as_json: bool, **opts: Any) -> None:
    """Recompute the signals on data cut at many times; any that change peeked at the future.

    Exits 1 when a signal differs between the full and a truncated run.

    \b
    Example:
      falcon backtest lookahead --strategy rsi_reversion --symbols AAPL,MSFT --cut-points 30
    """
    from falcon.backtest.jobs import resolve_request
    from falcon.backtest.service import jsonable, load_bars, plan_window
    from falcon.strategy import builtin_names, lookahead_check

    request = _request("backtest", opts)
    ctx = app()
    sessions = None
    if request.strategy not in builtin_names():
        ctx.ready_engine()
        sessions = ctx.sessions
    spec = resolve_request(request, sessions).spec
    symbols = request.symbols or spec.universe.tickers or ()
    window = plan_window(spec.timeframe, request.start, request.end, spec.warmup_bars)
    bars = load_bars(ctx.settings, spec.timeframe, symbols, window).drop("date")
    found = lookahead_check(spec, bars, cut_points)
    report = jsonable({"strategy": spec.name, "params": spec.params,
                       "symbols": sorted({s.upper() for s in symbols}), "bars": bars.height,
                       "cut_points": cut_points, "clean": not found, "differences": len(found),
                       "examples": found[:20]})
    if as_json:
        echo_json(report)
    elif found:
        echo_table(f"{spec.name}: signals that change when later bars are removed",
                   ["ticker", "ts", "column", "full", "truncated", "cut"],
                   [(d["ticker"], d["ts"], d["column"], d["full"], d["truncated"], d["cut"])
                    for d in report["examples"]])
        click.echo(f"{len(found)} signal(s) peek at later bars", err=True)
    else:
        click.echo(f"clean: {spec.name} on {bars.height} bars, {cut_points} cut points")
    if found:
        sys.exit(1)


@cli.command("list")
@click.option("--kind", type=click.Choice(["backtest", "optimize", "walkforward",
                                           "walkforward_oos"]), help="Only runs of one kind.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(kind: str | None, limit: int, as_json: bool) -> None:
    """The stored runs, newest first.

    \b
    Example:
      falcon backtest list --kind optimize --json
    """
    from falcon.backtest.store import list_runs, run_summary

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as session:
        rows = [run_summary(r) for r in list_runs(session, kind=kind, limit=limit)]
    if as_json:
        echo_json(rows)
        return
    echo_table("Backtest runs", ["id", "kind", "strategy", "symbols", "range", "status",
                                 "return_pct", "sharpe", "trades"],
               [(r["id"], r["kind"], r["strategy"], ",".join(r["symbols"][:4])
                 + ("…" if len(r["symbols"]) > 4 else ""), f"{r['start']}..{r['end']}",
                 r["status"], _fmt(r["return_pct"]), _fmt(r["sharpe"]), r["trades"])
                for r in rows])


@cli.command("show")
@click.argument("run_id", type=int)
@click.option("--no-trades", is_flag=True, help="Leave the trades out.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(run_id: int, no_trades: bool, as_json: bool) -> None:
    """One stored run: its inputs, metrics and trades.

    \b
    Example:
      falcon backtest show 12 --json
    """
    from falcon.backtest.store import run_detail

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as session:
        detail = run_detail(session, run_id, trades=not no_trades)
    if as_json:
        echo_json(detail)
        return
    for key in ("id", "kind", "strategy", "params", "symbols", "start", "end", "status",
                "error", "created_at"):
        click.echo(f"{key:<14} {_fmt(detail.get(key))}")
    metrics = detail["metrics"]
    shown = [(k, _fmt(metrics.get(k))) for k in _HEADLINE if k in metrics]
    if shown:
        echo_table("metrics", ["metric", "value"], shown)
    trades = detail.get("trades") or []
    if trades:
        echo_table(f"trades ({len(trades)})", ["ticker", "side", "qty", "entry", "entry_price",
                                              "exit", "exit_price", "pnl", "reason"],
                   [(t["ticker"], t["side"], t["qty"], t["entry_ts"], _fmt(t["entry_price"]),
                     t["exit_ts"], _fmt(t["exit_price"]), _fmt(t["pnl"]), t["exit_reason"])
                    for t in trades[:200]])
