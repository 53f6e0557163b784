"""The screen: every ticker's last completed session against one or more profiles.

:func:`compute` is pure (bars in, ranked candidates out) and :func:`run_screens` wraps it with
the store, the optional LLM ranking and the database (a ``ScreenRun`` per profile, a
``ScreenPick`` per pick, an ``Event`` of kind ``screen`` when a run completes).

How it stays fast over the whole market: one screen serves every profile, and every distinct
expression of every profile (and every function call inside them) is computed once. A cheap
liquidity and price pass over the last 20 sessions drops most tickers before anything else is
read. Then each expression gets only the history it needs, in two tiers: windows of fixed length
(SMA200, a 120-day low) exactly their look-back, recursive smoothings (RSI, ATR, EMA, whose value
depends on where the series starts) their look-back plus a margin, at least ``SHORT_TIER``
sessions; and each tier reads from the store only the bar fields its expressions use (SMA200
reads closes alone). Rows are put in (ticker, date) order by a counting sort on integer codes,
indicators run in one pass per chunk of tickers, and the rules and factors over them (comparisons,
arithmetic, shifts) only on each ticker's last few rows, as many as their shifts reach back
(:func:`falcon.strategy.compile.compile_staged`); only the screened session's row is kept.

No look-ahead: nothing after the screened session's close is read or used. Bars dated after it
are filtered out (whatever the reader returns), and split adjustment only uses splits executed on
or before it, so a screen re-run years later sees the prices of that day.

Example::

    profiles = load_profiles(settings)
    results = run_screens(settings, sessions, [profiles["momentum_breakout"]])
    for pick in results[0].picks:
        print(pick.rank, pick.ticker, pick.score, "; ".join(pick.reasons))
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from falcon import calendar as cal
from falcon import indicators as ind
from falcon.config import Settings
from falcon.data.reader import adjust_for_splits, load_splits
from falcon.data.store import Store
from falcon.db.engine import transaction
from falcon.db.models import Event, ScreenPick, ScreenRun, Ticker
from falcon.db.types import utcnow
from falcon.errors import DataError, NotFound
from falcon.screener import lang, scoring
from falcon.screener.profiles import Profile
from falcon.strategy.compile import StagedExpressions

log = logging.getLogger(__name__)

__all__ = ["Pick", "ScreenResult", "compute", "load_run", "resolve_date", "run_screens"]

#: Sessions the liquidity filters average over (volume and dollar volume).
LIQUIDITY_WINDOW = 20
#: Values (rows x columns) read from the store together (bounds memory; see _tier_values). A
#: whole-market tier (5,000 liquid tickers) fits in one read: each scan decodes its files again,
#: and at 1.5M the two long tiers took two each (about 50 MB less peak, 10-30% more time).
READ_CELLS = 4_000_000
#: Values (rows x input, indicator and result columns) computed together (bounds memory).
CHUNK_CELLS = 3_000_000
#: Sessions computed for expressions that need few (most of them); the rest get the full window.
SHORT_TIER = 100
#: Sessions beyond an expression's look-back, so recursive smoothings (EMA, RSI) settle.
WARMUP_MARGIN = 50
EVENT_CHANNEL = "falcon_events"


@dataclass(frozen=True)
class Pick:
    """A ranked candidate with everything the paper trader needs to act on it."""

    ticker: str
    rank: int
    score: float
    close: float
    factors: dict[str, Any]
    reasons: list[str]
    entry_low: float | None
    entry_high: float | None
    stop: float | None
    target: float | None
    fresh_until: datetime | None
    atr: float | None = None
    llm: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``--json`` and the API)."""
        return {
            "rank": self.rank, "ticker": self.ticker, "score": self.score, "close": self.close,
            "entry_low": self.entry_low, "entry_high": self.entry_high, "stop": self.stop,
            "target": self.target, "fresh_until": self.fresh_until, "atr": self.atr,
            "factors": self.factors, "reasons": self.reasons, "llm": self.llm,
        }


@dataclass
class ScreenResult:
    """One profile's screen of one session."""

    profile: Profile
    as_of: date
    universe_size: int
    candidates: int
    picks: list[Pick]
    ranking: str = "rules"
    ranking_note: str | None = None
    run_id: int | None = None
    # The ranked candidates the LLM may re-rank: the first max(top_n, llm.candidates).
    pool: list[Pick] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "run_id": self.run_id, "profile": self.profile.name, "as_of": self.as_of,
            "universe_size": self.universe_size, "candidates": self.candidates,
            "ranking": self.ranking, "ranking_note": self.ranking_note,
            "picks": [p.as_dict() for p in self.picks],
        }


# --- dates and windows -------------------------------------------------------------------------


def resolve_date(as_of: date | None, now: datetime | None = None) -> date:
    """``as_of`` checked to be a session, or the last completed session at ``now``."""
    if as_of is None:
        return cal.last_completed_session(now)
    if not cal.is_trading_day(as_of):
        raise DataError(f"{as_of} is not an NYSE trading day; screens run on sessions")
    return as_of


def _window_start(as_of: date, bars: int) -> date:
    """The session ``bars - 1`` sessions before ``as_of`` (so the window holds ``bars``)."""
    lo = max(cal.bounds()[0], as_of - timedelta(days=int(bars * 1.5) + 15))
    days = cal.trading_days(lo, as_of)
    return days[max(0, len(days) - bars)]


def read_window(settings: Settings, as_of: date, bars: int) -> pl.LazyFrame:
    """Split-adjusted day bars of the ``bars`` sessions up to and including ``as_of``, lazily.

    The same store scan and split adjustment as :func:`falcon.data.reader.read_bars`, but
    *unsorted* and uncollected: :func:`compute` filters it down to the tickers, sessions and
    columns each part of the screen needs (the filters reach the Parquet scan) and sorts only
    what is left, by integer keys. Sorting the whole window by ticker first was most of the cost
    of a screen.
    """
    start = _window_start(as_of, bars)
    splits = load_splits(settings)
    # Splits after the screened day are the future: adjusting for them would rescale prices
    # (and price filters) with knowledge the screen could not have had.
    splits = splits.filter(pl.col("execution_date") <= as_of)
    lf = Store.of(settings).scan("day", start, as_of)
    lf = lf.filter((pl.col("date") >= start) & (pl.col("date") <= as_of))
    lf = adjust_for_splits(lf, splits)
    return lf.select("ticker", "ts", "date", "open", "high", "low", "close", "volume")


# --- the computation ---------------------------------------------------------------------------


def _universe_mask(frame: pl.DataFrame, p: Profile) -> pl.Series:
    u = p.universe
    mask = (pl.col("avg_volume") >= u.min_avg_volume) & (
        pl.col("avg_dollar_volume") >= u.min_avg_dollar_volume)
    if u.min_price is not None:
        mask &= pl.col("close") >= u.min_price
    if u.max_price is not None:
        mask &= pl.col("close") <= u.max_price
    if u.exclude:
        mask &= ~pl.col("ticker").is_in(list(u.exclude))
    if u.types:
        mask &= pl.col("ref_type").is_in(list(u.types)).fill_null(False)
    sector = pl.col("ref_sector").str.to_lowercase()
    if u.sectors:
        any_of = pl.lit(False)
        for s in u.sectors:
            any_of |= sector.str.contains(s.lower(), literal=True).fill_null(False)
        mask &= any_of
    for s in u.exclude_sectors:
        mask &= ~sector.str.contains(s.lower(), literal=True).fill_null(False)
    return frame.select(mask.fill_null(False).alias("m")).get_column("m")


def _liquidity(bars: pl.LazyFrame, as_of: date) -> pl.DataFrame:
    """Close, 20-session average volume and dollar volume of every ticker traded on ``as_of``."""
    recent = bars.filter(pl.col("date") >= _window_start(as_of, LIQUIDITY_WINDOW))
    return (
        recent.group_by("ticker")
        .agg(
            # By date, not by row: the bars may come in any order.
            pl.col("date").max().alias("last_date"),
            pl.col("close").sort_by("date").last(),
            pl.len().alias("n"),
            pl.col("volume").mean().alias("avg_volume"),
            (pl.col("close") * pl.col("volume")).mean().alias("avg_dollar_volume"),
        )
        # A ticker without a bar on the day is not screened (halted, delisted, not yet listed),
        # and one without 20 sessions has no average to judge its liquidity by.
        .filter((pl.col("last_date") == as_of) & (pl.col("n") >= LIQUIDITY_WINDOW))
        .drop("last_date", "n")
        .collect()
    )


def compute(
    bars: pl.LazyFrame,
    profiles: Sequence[Profile],
    as_of: date,
    *,
    reference: pl.DataFrame | None = None,
) -> list[ScreenResult]:
    """Screen ``bars`` (ticker, ts, date, open, high, low, close, volume) on session ``as_of``.

    Rows may come in any order (``(ticker, date)`` unique); each tier's rows are put in
    (ticker, date) order after they are read.

    ``reference`` (ticker, type, sector) is needed by profiles that filter on types or sectors.
    Returns one rule-ranked :class:`ScreenResult` per profile, in order.
    """
    if "date" not in bars.collect_schema():
        bars = bars.with_columns(
            pl.col("ts").dt.convert_time_zone("America/New_York").dt.date().alias("date"))
    bars = bars.filter(pl.col("date") <= as_of)  # never a bar after the screened session

    liquid = _liquidity(bars, as_of)
    ref = reference if reference is not None else pl.DataFrame(
        schema={"ticker": pl.String, "type": pl.String, "sector": pl.String})
    liquid = liquid.join(
        ref.select("ticker", pl.col("type").alias("ref_type"),
                   pl.col("sector").alias("ref_sector")),
        on="ticker", how="left",
    )
    masks = {p.name: _universe_mask(liquid, p) for p in profiles}
    union = pl.Series([False] * liquid.height, dtype=pl.Boolean)
    for m in masks.values():
        union = union | m
    eligible = liquid.filter(union)

    # Every distinct expression once, whichever profiles share it.
    texts: dict[str, str] = {}  # text -> column

    def column(text: str) -> str:
        if text not in texts:
            texts[text] = f"_c{len(texts)}"
        return texts[text]

    plan: dict[str, dict[str, Any]] = {}
    atr_columns: dict[str, pl.Expr] = {}
    for p in profiles:
        conds = []
        for c in p.conditions:
            sides = lang.split_comparison(c.expr)
            conds.append({"cond": c, "col": column(c.expr), "sides": sides,
                          "left": column(sides[0]) if sides else None,
                          "right": column(sides[2]) if sides else None})
        facs = {f.name: column(f.expr) for f in p.factors}
        n = p.levels.atr_period
        atr_columns[f"_atr{n}"] = ind.atr("high", "low", "close", n, by="ticker")
        plan[p.name] = {"conds": conds, "factors": facs, "atr": f"_atr{n}"}

    warmup = max(p.warmup_bars for p in profiles)
    # Most expressions need a few dozen sessions, a few (SMA200) need a year: each tier is
    # computed over only the sessions it needs, and from only the bar fields it reads.
    tiers: dict[int, _Tier] = {}

    # A recursive smoothing (RSI, ATR, EMA) depends on where its series starts, so it gets
    # SHORT_TIER sessions when its look-back plus WARMUP_MARGIN fits in them, else the whole
    # warm-up (which a profile may set to give it more); a window of fixed length (SMA, highest,
    # Bollinger) is exact with its look-back alone.
    def need(look: int, recursive: bool) -> int:
        if recursive:
            return min(warmup, SHORT_TIER if look + 1 + WARMUP_MARGIN <= SHORT_TIER else warmup)
        return min(warmup, look + 1)

    recursive = {col: lang.recursive(text) for text, col in texts.items()}
    recursive.update(dict.fromkeys(atr_columns, True))
    needs = {col: need(lang.lookback(text), recursive[col]) for text, col in texts.items()}
    needs.update({name: need(int(name[4:]), True) for name in atr_columns})
    short = min(warmup, SHORT_TIER)
    longest = max([short, *needs.values()])
    # Three tiers at most: fixed windows that fit in SHORT_TIER (over the longest of them, e.g.
    # SMA50's 50 sessions), recursive smoothings (SHORT_TIER), and the rest (the longest need).
    fixed = max([n for c, n in needs.items() if n <= short and not recursive[c]], default=short)

    def tier(col: str) -> _Tier:
        sessions = longest if needs[col] > short else short if recursive[col] else fixed
        return tiers.setdefault(sessions, _Tier(sessions))

    for text, col in texts.items():
        t = tier(col)
        t.exprs[col] = text
        t.fields |= lang.fields(text)
    for name, expr in atr_columns.items():
        t = tier(name)
        t.extra[name] = expr
        t.fields |= {"high", "low", "close"}

    tickers = eligible.get_column("ticker").sort().to_list()
    schema = {"ticker": pl.String, **dict.fromkeys([*texts.values(), *atr_columns], pl.Float64)}
    today = pl.DataFrame(schema=schema)
    if tickers:
        # The ticker as an enum of the eligible tickers in sorted order: sorting and finding
        # ticker boundaries compare small integers instead of strings.
        enum = pl.Enum(tickers)
        got: pl.DataFrame | None = None
        for t in tiers.values():
            values = _tier_values(bars, t, tickers, enum, as_of)
            got = values if got is None else got.join(values, on="ticker", how="left")
        if got is not None:
            today = got.with_columns(pl.col("ticker").cast(pl.String))
    table = eligible.join(today, on="ticker", how="inner")

    fresh = _fresh_until(as_of)
    results = []
    for p in profiles:
        results.append(_rank(p, as_of, table.filter(_universe_mask(table, p)),
                             int(masks[p.name].sum()), plan[p.name], fresh))
    return results


@dataclass
class _Tier:
    """Expressions computed over the same number of sessions."""

    sessions: int
    exprs: dict[str, str] = field(default_factory=dict)  # column -> expression text
    extra: dict[str, pl.Expr] = field(default_factory=dict)  # column -> expression (ATR)
    fields: set[str] = field(default_factory=set)  # bar fields read


def _tier_values(bars: pl.LazyFrame, t: _Tier, tickers: list[str], enum: pl.Enum,
                 as_of: date) -> pl.DataFrame:
    """Every column of tier ``t`` on ``as_of``, one row per ticker (ticker as ``enum``).

    Tickers are independent, so they are read and computed in chunks of about
    :data:`READ_CELLS` values: memory stays that of one chunk (its dozens of indicator columns)
    instead of the whole market's, and the ticker range of a chunk lets the scan skip row
    groups by their statistics.
    """
    start = _window_start(as_of, t.sessions)
    cols = [c for c in ("open", "high", "low", "close", "volume") if c in t.fields]
    per_read = max(1, READ_CELLS // (t.sessions * (2 + len(cols))))
    # Indicators (the hoisted calls and ATR) run over the whole history; the rules and factors
    # over them only on each ticker's last rows, as many as their shifts reach back.
    staged = lang.staged(t.exprs)
    parts: list[pl.DataFrame] = []
    for i in range(0, len(tickers), per_read):
        chunk = tickers[i:i + per_read]
        in_range = pl.col("ticker").is_between(pl.lit(chunk[0]), pl.lit(chunk[-1]))
        window = (
            bars.filter(in_range & pl.col("ticker").is_in(chunk) & (pl.col("date") >= start))
            .select(pl.col("ticker").cast(enum), "date", *cols)
            .collect()
        )
        window = window[pl.Series(_ticker_time_order(window))]
        parts.extend(_tier_chunk(window, t, staged, i, len(chunk), as_of))
        del window
    if not parts:
        return pl.DataFrame(schema={"ticker": enum, **dict.fromkeys([*t.exprs, *t.extra],
                                                                    pl.Float64)})
    return pl.concat(parts, how="vertical_relaxed")


def _tier_chunk(window: pl.DataFrame, t: _Tier, staged: StagedExpressions, first: int,
                count: int, as_of: date) -> list[pl.DataFrame]:
    """Tier ``t`` on ``as_of`` for the tickers (codes ``first`` .. + ``count``) of ``window``.

    Computed in slices of about :data:`CHUNK_CELLS` values (its indicator columns included).
    """
    # Sized in values, not rows: the long tier (SMA200 of closes) has a few columns, the short
    # one (RSI, ATR, Bollinger and every condition and factor on them) dozens.
    width = 2 + len(t.fields) + 2 * (len(t.exprs) + len(t.extra)) + 2
    per_chunk = max(1, CHUNK_CELLS // (t.sessions * width))
    codes = window.get_column("ticker").to_physical().to_numpy()
    window = window.with_columns(pl.Series(_TAIL, _last_rows(codes, staged.reach + 1)))
    bounds = [*np.searchsorted(codes, np.arange(first, first + count, per_chunk)), len(codes)]
    out = []
    for lo, hi in itertools.pairwise(bounds):
        if hi <= lo:
            continue
        part = window.slice(int(lo), int(hi - lo))
        indicators = staged.with_calls(part).with_columns(**t.extra).filter(pl.col(_TAIL))
        # In memory: the frame is in memory already, and the streaming engine's set-up cost
        # (several milliseconds a query) was paid again for every chunk.
        out.append(staged.with_finals(indicators).filter(pl.col("date") == as_of)
                   .select("ticker", *t.exprs, *t.extra).collect(engine="in-memory"))
    return out


_TAIL = "__tail"


def _last_rows(codes: np.ndarray, n: int) -> np.ndarray:
    """True on the last ``n`` rows of each run of equal ``codes`` (rows grouped by code)."""
    if not len(codes):
        return np.zeros(0, dtype=bool)
    ends = np.append(np.flatnonzero(codes[1:] != codes[:-1]) + 1, len(codes))
    lengths = np.diff(ends, prepend=0)
    return np.repeat(ends, lengths) - np.arange(len(codes)) <= n


def _ticker_time_order(frame: pl.DataFrame) -> np.ndarray:
    """Row indices that put ``frame`` (enum ``ticker``, ``date``) in (ticker, date) order.

    A counting sort: each row's slot in a (ticker x day) grid is known from its ticker code and
    date, so one scatter and one gather order the rows in linear time and a few bytes per
    row, where polars' sort took several times the frame's size in memory (and, on two keys,
    most of the screen's time). (ticker, date) is unique in the store.
    """
    codes = frame.get_column("ticker").to_physical().to_numpy().astype(np.int64)
    days = frame.get_column("date").to_physical().to_numpy().astype(np.int64)
    if not len(codes):
        return np.zeros(0, dtype=np.int64)
    lo_day, span = int(days.min()), int(days.max() - days.min()) + 1
    lo_code = int(codes.min())
    slots = (codes - lo_code) * span + (days - lo_day)
    grid = np.full((int(codes.max()) - lo_code + 1) * span, -1, dtype=np.int64)
    grid[slots] = np.arange(len(slots))
    return grid[grid >= 0]


def _fresh_until(as_of: date) -> datetime | None:
    try:
        return cal.session_open_close(cal.next_trading_day(as_of))[1]
    except cal.CalendarError:
        return None


def _rank(p: Profile, as_of: date, table: pl.DataFrame, universe_size: int,
          plan: dict[str, Any], fresh: datetime | None) -> ScreenResult:
    ok = pl.lit(True)
    for entry in plan["conds"]:
        ok &= pl.col(entry["col"]).cast(pl.Boolean).fill_null(False)
    candidates = table.filter(ok)
    ranked = scoring.score(candidates, p.factors, plan["factors"])
    # Only the top N are stored and only the first `llm.candidates` can be re-ranked: building
    # picks (factor tables, reasons in words) for every candidate of a whole-market day is waste.
    ranked = ranked.head(max(p.top_n, p.llm.candidates))
    picks: list[Pick] = []
    for i, row in enumerate(ranked.iter_rows(named=True), 1):
        raw = {f.name: _num(row[plan["factors"][f.name]]) for f in p.factors}
        factors: dict[str, Any] = {
            f.name: {"value": raw[f.name], "normalized": _num(row[f"n_{f.name}"]),
                     "weight": f.weight}
            for f in p.factors
        }
        reasons = []
        for entry in plan["conds"]:
            c, sides = entry["cond"], entry["sides"]
            left = row[entry["left"]] if entry["left"] else None
            right = row[entry["right"]] if entry["right"] else None
            word = lang.comparison_word(sides[1]) if sides else ""
            reasons.append(scoring.render_reason(c.reason, c.expr, sides, left, right, raw, word))
        close = float(row["close"])
        atr = _num(row[plan["atr"]])
        lv = scoring.levels(close, atr, p.levels)
        picks.append(Pick(
            ticker=row["ticker"], rank=i, score=float(row["score"]), close=round(close, 4),
            factors=factors, reasons=reasons, entry_low=lv["entry_low"],
            entry_high=lv["entry_high"], stop=lv["stop"], target=lv["target"],
            fresh_until=fresh, atr=atr,
        ))
    return ScreenResult(profile=p, as_of=as_of, universe_size=universe_size,
                        candidates=candidates.height, picks=picks[:p.top_n], pool=picks)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    x = float(value)
    return round(x, 6) if x == x and abs(x) != float("inf") else None


# --- runs in the database ----------------------------------------------------------------------


def _reference_frame(sessions: sessionmaker[Session]) -> pl.DataFrame:
    with sessions() as s:
        rows = s.execute(select(Ticker.ticker, Ticker.type, Ticker.sector, Ticker.name)).all()
    return pl.DataFrame([tuple(r) for r in rows], orient="row",
                        schema={"ticker": pl.String, "type": pl.String, "sector": pl.String,
                                "name": pl.String})


def run_screens(
    settings: Settings,
    sessions: sessionmaker[Session],
    profiles: Sequence[Profile],
    *,
    as_of: date | None = None,
    use_llm: bool | None = None,
    bars: pl.LazyFrame | None = None,
    now: datetime | None = None,
) -> list[ScreenResult]:
    """Screen ``as_of`` (default: the last completed session) and store each profile's run.

    ``use_llm``: True or False forces LLM ranking on or off; None follows each profile. ``bars``
    replaces the store (tests, benchmarks). A failure leaves the runs marked ``failed`` with the
    error and re-raises.
    """
    if not profiles:
        raise NotFound("no profiles to screen")
    day = resolve_date(as_of, now)
    with transaction(sessions) as s:
        runs = [ScreenRun(profile=p.name, as_of=day, status="running") for p in profiles]
        s.add_all(runs)
        s.flush()
        run_ids = [r.id for r in runs]
    try:
        reference = _reference_frame(sessions)
        if bars is None:
            bars = read_window(settings, day, max(p.warmup_bars for p in profiles))
        results = compute(bars, profiles, day, reference=reference)
        if not any(r.universe_size for r in results) and _no_bars_on(bars, day):
            raise DataError(f"no day bars for {day} in the store: run `falcon data sync` "
                            "(or `falcon data sample`) first")
        for result in results:
            wants_llm = result.profile.llm.enabled if use_llm is None else use_llm
            if wants_llm and result.pool:
                from falcon.screener.llm_rank import rerank

                rerank(settings, sessions, result, reference)
    except BaseException as exc:
        with transaction(sessions) as s:
            for run_id in run_ids:
                run = s.get(ScreenRun, run_id)
                if run is not None:
                    run.status, run.finished_at = "failed", utcnow()
                    run.error = f"{type(exc).__name__}: {exc}"[:4000]
        raise
    with transaction(sessions) as s:
        for run_id, result in zip(run_ids, results, strict=True):
            run = s.get(ScreenRun, run_id)
            if run is None:  # pragma: no cover - deleted under our feet
                raise NotFound(f"screen run {run_id} vanished")
            run.status, run.finished_at = "done", utcnow()
            run.universe_size, run.candidates = result.universe_size, result.candidates
            run.ranking, run.ranking_note = result.ranking, result.ranking_note
            for pick in result.picks:
                s.add(ScreenPick(
                    run_id=run_id, ticker=pick.ticker, rank=pick.rank, score=pick.score,
                    close=pick.close, factors=pick.factors, reasons=pick.reasons,
                    entry_low=pick.entry_low, entry_high=pick.entry_high, stop=pick.stop,
                    target=pick.target, fresh_until=pick.fresh_until, llm=pick.llm,
                ))
            result.run_id = run_id
            s.add(Event(kind="screen", payload={
                "run_id": run_id, "profile": result.profile.name, "as_of": day.isoformat(),
                "picks": len(result.picks), "ranking": result.ranking,
                "tickers": [p.ticker for p in result.picks],
            }))
        if s.get_bind().dialect.name == "postgresql":
            # Live pages LISTEN; NOTIFY is delivered only if (and when) this transaction commits.
            s.execute(select(func.pg_notify(EVENT_CHANNEL, "screen")))
    return results


def _no_bars_on(bars: pl.LazyFrame, day: date) -> bool:
    schema = bars.collect_schema()
    if "date" in schema:
        hit = bars.filter(pl.col("date") == day).select(pl.len()).collect().item()
    else:
        hit = 1
    return not hit


def load_run(session: Session, run_id: int) -> ScreenRun:
    """A stored run with its picks (NotFound when there is none)."""
    run = session.get(ScreenRun, run_id)
    if run is None:
        raise NotFound(f"no screen run {run_id}")
    _ = run.picks  # load while the session is open
    return run
