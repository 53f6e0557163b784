"""Chart data for the dashboard: JSON-ready series that ``static/charts.js`` draws.

A chart is a dict ``{"series": [...], "note": str | None}`` embedded in the page with
``|tojson`` inside ``<script type="application/json">`` (the CSP forbids inline scripts). Each
series is ``{"name", "type", "data"}`` plus optional ``color``, ``percent`` (values are percent)
and, on a candlestick series, ``markers``. ``type`` is ``line``, ``area`` or ``candlestick``.

Times follow DESIGN.md ("stored in UTC, shown in America/New_York"): a daily point's time is its
New York session date (``"2024-03-01"``, a business day to the chart library); an intraday
point's time is Unix seconds shifted by New York's UTC offset at that instant, because the
library's time axis knows no time zones and would otherwise print UTC.

Every reader of market data here degrades to "no series" when the store has nothing for the
request: a page with a chart must render on an empty install.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

import polars as pl
from sqlalchemy import select
from sqlalchemy.orm import Session

from falcon import indicators as ind
from falcon.config import Settings
from falcon.data.flatfile import NEW_YORK
from falcon.data.reader import read_bars
from falcon.db.models import BacktestEquity, BacktestRun, BacktestTrade
from falcon.errors import FalconError
from falcon.strategy.expr import Attr, Call, ExprError, Field, Node, Num, Param, parse, walk

Point = dict[str, Any]
Series = dict[str, Any]
Chart = dict[str, Any]

# Colour-blind-safe (Okabe-Ito) order: strategy first, benchmark second, overlays after.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#999999")
UP, DOWN = "#009e73", "#d55e00"
# Indicator lines over candles: none of them green or red, the candles' own colours.
OVERLAY_COLORS = ("#0072b2", "#e69f00", "#cc79a7", "#56b4e9", "#999999")
BENCHMARKS = ("SPY", "I:SPX")  # first one the store has wins: SPY when imported, else the index
MAX_POINTS = 20_000  # beyond this a series is thinned: a phone cannot show more anyway
_PRICE_FIELDS = ("open", "high", "low", "close")
_OVERLAYS = ("sma", "ema", "bollinger", "highest", "lowest")
_RULE_KEYS = ("entry", "exit", "short_entry", "short_exit")


def chart_time(ts: datetime | date, *, intraday: bool) -> str | int:
    """A chart's time for ``ts``: the New York date, or New York wall time as Unix seconds."""
    if not isinstance(ts, datetime):
        return ts.isoformat()
    local = ts.astimezone(NEW_YORK)
    if not intraday:
        return local.date().isoformat()
    offset = local.utcoffset() or timedelta(0)
    return int((ts.astimezone(UTC) + offset).timestamp())


def _thin(points: list[Point]) -> list[Point]:
    if len(points) <= MAX_POINTS:
        return points
    step = math.ceil(len(points) / MAX_POINTS)
    return [*points[:-1:step], points[-1]]  # keep the last point: the current value


def _dedupe(points: list[Point]) -> list[Point]:
    """Points with strictly increasing times (the library refuses repeats); the last one wins."""
    out: list[Point] = []
    for p in points:
        if out and out[-1]["time"] == p["time"]:
            out[-1] = p
        else:
            out.append(p)
    return out


def line(
    name: str, pairs: Iterable[tuple[datetime | date, float]], *, intraday: bool, color: str,
    kind: str = "line", percent: bool = False, precision: int | None = None,
) -> Series:
    """A line (or area) series from ``(time, value)`` pairs, in time order.

    ``precision`` is the decimals on the price axis (default: the library's 2).
    """
    # Money to the cent, other values to 6 places: every extra digit is page weight.
    digits = 2 if precision is not None and precision <= 2 else 6
    points = [
        {"time": chart_time(t, intraday=intraday), "value": round(float(v), digits)}
        for t, v in pairs
        if v is not None and math.isfinite(v)
    ]
    out: Series = {"name": name, "type": kind, "color": color, "data": _thin(_dedupe(points))}
    if percent:
        out["percent"] = True
    if precision is not None:
        out["precision"] = precision
    return out


def drawdown(pairs: Sequence[tuple[datetime | date, float]]) -> list[tuple[datetime | date, float]]:
    """Percent below the running peak at each point (0 at a new high, -12.5 for 12.5 % down)."""
    out: list[tuple[datetime | date, float]] = []
    peak = -math.inf
    for t, v in pairs:
        peak = max(peak, v)
        out.append((t, (v / peak - 1.0) * 100.0 if peak > 0 else 0.0))
    return out


# --- market data -------------------------------------------------------------------------------


def daily_closes(
    settings: Settings, ticker: str, start: date, end: date
) -> list[tuple[date, float]]:
    """``(session date, close)`` of ``ticker`` from ``start`` to ``end`` (empty when absent)."""
    try:
        frame = (
            read_bars(settings, "day", [ticker], start, end, with_date=True)
            .select("date", "close")
            .collect()
        )
    except (FalconError, OSError, pl.exceptions.PolarsError):
        return []
    return list(zip(frame["date"].to_list(), frame["close"].to_list(), strict=True))


def has_bars(market_data: str, ticker: str) -> bool:
    """True when the store at ``market_data`` holds day bars of ``ticker``."""
    try:
        frame = read_bars(market_data, "day", [ticker], adjusted=False).select(pl.len())
        return bool(frame.collect().item())
    except (FalconError, OSError, pl.exceptions.PolarsError):
        return False


@lru_cache(maxsize=16)
def _benchmark(market_data: str, data_version: object) -> str | None:
    return next((t for t in BENCHMARKS if has_bars(market_data, t)), None)


def benchmark_ticker(settings: Settings, data_version: object) -> str | None:
    """SPY when the store has it, else the sample's S&P 500 index (I:SPX), else None.

    Looking costs a scan of the store's day files, so the answer is cached per process until
    ``data_version`` (the last data import's id) changes.
    """
    return _benchmark(str(settings.market_data_dir), data_version)


def buy_and_hold(
    closes: Sequence[tuple[date, float]], initial: float, start: date
) -> list[tuple[date, float]]:
    """``initial`` money put into the benchmark at its first close on or after ``start``.

    Held at the close, without costs: a yardstick, not a simulated trade.
    """
    held = [(d, c) for d, c in closes if d >= start and c > 0]
    if not held:
        return []
    first = held[0][1]
    return [(d, initial * c / first) for d, c in held]


def bars(
    settings: Settings, ticker: str, kind: str, start: date | None, end: date | None
) -> pl.DataFrame:
    """OHLC bars of one ticker (split-adjusted), sorted by time; empty when the store has none."""
    try:
        return (
            read_bars(settings, kind, [ticker], start, end)
            .select("ts", "open", "high", "low", "close")
            .collect()
        )
    except (FalconError, OSError, pl.exceptions.PolarsError):
        return pl.DataFrame(
            schema={"ts": pl.Datetime("ns", "UTC"), "open": pl.Float64, "high": pl.Float64,
                    "low": pl.Float64, "close": pl.Float64}
        )


# --- strategy overlays -------------------------------------------------------------------------


def _rule_texts(cond: Any) -> Iterable[str]:
    """Every expression string inside a spec's condition (a string, or all/any/not/left-right)."""
    if isinstance(cond, str):
        yield cond
    elif isinstance(cond, dict):
        for key, value in cond.items():
            if key != "op":
                yield from _rule_texts(value)
    elif isinstance(cond, list):
        for item in cond:
            yield from _rule_texts(item)


def _param_values(spec: dict[str, Any], params: dict[str, Any] | None) -> dict[str, float]:
    values: dict[str, float] = {}
    declared = spec.get("params")
    for name, p in (declared if isinstance(declared, dict) else {}).items():
        if isinstance(p, dict):
            value = p.get("value", p.get("default"))
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = value
    for name, value in (params or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values[name] = value
    return values


def _constant(node: Node, values: dict[str, float]) -> float | None:
    if isinstance(node, Num):
        return float(node.value)
    if isinstance(node, Param):
        return values.get(node.name)
    return None


def overlay_calls(
    spec: dict[str, Any] | None, params: dict[str, Any] | None = None
) -> list[tuple[str, str, list[float]]]:
    """Price indicators a strategy's rules use: ``(function, field, [constants])``, deduplicated.

    Only calls drawable over the candles qualify: sma, ema, bollinger, highest and lowest of a
    price field, with number or ``$param`` arguments. A spec that does not parse gives nothing
    (the page still shows the candles and trades).
    """
    if not isinstance(spec, dict):
        return []
    values = _param_values(spec, params)
    found: dict[str, tuple[str, str, list[float]]] = {}
    for key in _RULE_KEYS:
        for text in _rule_texts(spec.get(key)):
            try:
                nodes = walk(parse(text))
            except ExprError:
                continue
            for node in nodes:
                target = node.target if isinstance(node, Attr) else node
                if not (isinstance(target, Call) and target.name in _OVERLAYS and target.args):
                    continue
                head, rest = target.args[0], target.args[1:]
                consts = [_constant(a, values) for a in rest]
                if not isinstance(head, Field) or head.name not in _PRICE_FIELDS:
                    continue
                if any(c is None for c in consts):
                    continue
                args = [c for c in consts if c is not None]
                label = f"{target.name}({head.name}{''.join(f', {c:g}' for c in args)})"
                found.setdefault(label, (target.name, head.name, args))
    return list(found.values())


def _overlay_exprs(name: str, field: str, args: list[float]) -> list[tuple[str, pl.Expr]]:
    n = int(args[0]) if args else 20
    label = f"{name}({field}, {n})"
    if name == "sma":
        return [(label, ind.sma(field, n))]
    if name == "ema":
        return [(label, ind.ema(field, n))]
    if name == "highest":
        return [(label, ind.highest(field, n))]
    if name == "lowest":
        return [(label, ind.lowest(field, n))]
    k = args[1] if len(args) > 1 else 2.0
    bands = ind.bollinger(field, n, k)
    return [(f"bollinger({field}, {n}, {k:g}).{part}", bands.struct.field(part))
            for part in ("upper", "middle", "lower")]


def overlays(
    frame: pl.DataFrame, calls: list[tuple[str, str, list[float]]], *, intraday: bool,
    since: datetime | None = None,
) -> list[Series]:
    """Indicator lines over ``frame`` (one ticker's bars), computed by :mod:`falcon.indicators`.

    ``frame`` may start before ``since`` (warm-up history, so the first drawn values are the
    same ones the strategy saw); points before ``since`` are not drawn.
    """
    # One colour per indicator call: a Bollinger band's three lines share theirs.
    exprs = [(label, expr, OVERLAY_COLORS[n % len(OVERLAY_COLORS)])
             for n, (name, field, args) in enumerate(calls)
             for label, expr in _overlay_exprs(name, field, args)]
    if frame.is_empty() or not exprs:
        return []
    computed = frame.select("ts", *[e.alias(f"_{i}") for i, (_, e, _) in enumerate(exprs)])
    if since is not None:
        computed = _since(computed, since)
    times = computed["ts"].to_list()
    out = []
    for i, (label, _, color) in enumerate(exprs):
        pairs = [(t, v) for t, v in zip(times, computed[f"_{i}"].to_list(), strict=True)
                 if v is not None]
        out.append(line(label, pairs, intraday=intraday, color=color))
    return out


def _since(frame: pl.DataFrame, since: datetime) -> pl.DataFrame:
    """Rows at or after the aware instant ``since`` (compared in UTC, the store's zone)."""
    bound = pl.lit(since.astimezone(UTC)).cast(frame.schema["ts"])
    return frame.filter(pl.col("ts") >= bound)


def candles(frame: pl.DataFrame, *, intraday: bool, since: datetime | None = None) -> list[Point]:
    """Candlestick points of ``frame`` from ``since`` on."""
    if since is not None:
        frame = _since(frame, since)
    rows = frame.select("ts", "open", "high", "low", "close").iter_rows()
    points = [
        {"time": chart_time(ts, intraday=intraday), "open": o, "high": h, "low": lo, "close": c}
        for ts, o, h, lo, c in rows
    ]
    return _thin(_dedupe(points))


def trade_markers(
    trades: Iterable[BacktestTrade], ticker: str, *, intraday: bool
) -> list[dict[str, Any]]:
    """Entry and exit markers of ``ticker``'s trades, in time order.

    Longs enter with an up arrow below the bar and exit with a down arrow above it; shorts the
    other way round. The text says side, quantity, price and, on exits, why.
    """
    out: list[tuple[str | int, int, dict[str, Any]]] = []
    for n, t in enumerate(trades):
        if t.ticker != ticker:
            continue
        long = t.side == "long"
        when = chart_time(t.entry_ts, intraday=intraday)
        entry = {
            "time": when, "position": "belowBar" if long else "aboveBar",
            "shape": "arrowUp" if long else "arrowDown", "color": UP if long else DOWN,
            "text": "Buy" if long else "Short",
        }
        out.append((when, 2 * n, entry))
        if t.exit_ts is not None and t.exit_price is not None:
            when = chart_time(t.exit_ts, intraday=intraday)
            exit_ = {
                "time": when, "position": "aboveBar" if long else "belowBar",
                "shape": "arrowDown" if long else "arrowUp", "color": DOWN if long else UP,
                # Short labels: prices and quantities are in the trades table below the chart.
                "text": ("Sell" if long else "Cover")
                + (f" ({t.exit_reason})" if t.exit_reason and t.exit_reason != "signal" else ""),
            }
            out.append((when, 2 * n + 1, exit_))
    # Same-type times sort correctly as they are (ISO dates as text, seconds as numbers).
    out.sort(key=lambda item: (item[0], item[1]))
    return [m for _, _, m in out]


# --- whole charts of a backtest ----------------------------------------------------------------


def is_intraday(run: BacktestRun) -> bool:
    """True for a minute-timeframe run (its points carry times of day)."""
    return isinstance(run.spec, dict) and run.spec.get("timeframe") == "minute"


def _ny_date(ts: datetime) -> date:
    return ts.astimezone(NEW_YORK).date()


def backtest_equity(
    session: Session, settings: Settings, run: BacktestRun, benchmark: str | None
) -> tuple[Chart, Chart]:
    """The run's equity against buy-and-hold of ``benchmark``, and its drawdown."""
    rows = session.execute(
        select(BacktestEquity.ts, BacktestEquity.equity)
        .where(BacktestEquity.run_id == run.id)
        .order_by(BacktestEquity.ts)
    ).all()
    pairs: list[tuple[datetime | date, float]] = [(r.ts, r.equity) for r in rows]
    intraday = is_intraday(run)
    series = [line("Strategy equity", pairs, intraday=intraday, color=PALETTE[0], precision=0)]
    note = None
    if pairs and benchmark and not intraday:
        start, end = _ny_date(rows[0].ts), _ny_date(rows[-1].ts)
        held = buy_and_hold(daily_closes(settings, benchmark, start, end), rows[0].equity, start)
        if held:
            series.append(line(f"Buy & hold {benchmark}", held, intraday=False, color=PALETTE[1],
                               precision=0))
        else:
            note = f"The store has no {benchmark} bars for {start} to {end}: no benchmark line."
    elif pairs and intraday:
        note = "Intraday run: the daily benchmark is not drawn."
    elif pairs:
        note = "No benchmark in the store (SPY or I:SPX): no buy-and-hold line."
    dd = line("Drawdown", drawdown(pairs), intraday=intraday, color=DOWN, kind="area",
              percent=True)
    return {"series": series, "note": note}, {"series": [dd], "note": None}


def chart_ticker(run: BacktestRun, wanted: str | None) -> str | None:
    """The ticker whose candles to draw: ``wanted`` if the run has it, else its first traded one."""
    symbols = [s for s in (run.symbols or []) if isinstance(s, str)]
    traded = sorted({t.ticker for t in run.trades})
    if wanted and (wanted in symbols or wanted in traded):
        return wanted
    found = traded or symbols
    return found[0] if found else None


def price_chart(settings: Settings, run: BacktestRun, ticker: str) -> Chart:
    """``ticker``'s candles over the run with its trades marked and the rules' indicators."""
    intraday = is_intraday(run)
    calls = overlay_calls(run.spec, run.params)
    start, end = run.start, run.end
    if start is None and run.trades:
        start = _ny_date(min(t.entry_ts for t in run.trades))
    warm_start = start
    if start is not None:
        longest = max((int(args[0]) if args else 20 for _, _, args in calls), default=0)
        # Calendar days that surely hold ``longest`` sessions (intraday: a few sessions back).
        back = 5 if intraday else longest * 3 // 2 + 10
        warm_start = start - timedelta(days=back)
    frame = bars(settings, ticker, "minute" if intraday else "day", warm_start, end)
    since = datetime.combine(start, time(0), NEW_YORK) if start is not None else None
    data = candles(frame, intraday=intraday, since=since)
    note = None
    if not data:
        note = f"The store has no {ticker} bars for this run's dates."
    price: Series = {"name": ticker, "type": "candlestick", "data": data,
                     "markers": trade_markers(run.trades, ticker, intraday=intraday)}
    lines = overlays(frame, calls, intraday=intraday, since=since)
    return {"series": [price, *lines], "note": note,
            "interval": "minute" if intraday else "daily"}
