"""Indicator conditions: the strategy language evaluated on a rolling window of each ticker's bars.

A condition such as ``rsi(close, 14) < 30`` is parsed and type-checked with the strategy package's
own parser and whitelist (nothing is ever run as Python), then compiled to polars by the strategy
compiler, so an alert and a backtest agree on what ``rsi`` means.

Each ticker keeps its last W bars in numpy ring buffers (appending is O(1), no polars per bar);
W is eight times the condition's look-back (plus slack). Recursive indicators (EMA, Wilder's RSI,
ATR) computed from a window differ from a full-history value by the weight of the dropped bars,
(1 - 1/n)^(8n) ~ e^-8 (3e-4) for Wilder smoothing, which is below what a threshold alert can tell.
Conditions are evaluated for all tickers of a batch at once: one polars query per distinct
condition, over the concatenated windows, instead of one query per ticker.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import polars as pl

from falcon.domain.market import Bar
from falcon.errors import ValidationError

if TYPE_CHECKING:
    from falcon.strategy.expr import Node
    from falcon.strategy.spec import StrategySpec

__all__ = ["CompiledCondition", "Windows", "compile_condition", "evaluate"]

_WINDOW_FACTOR = 8
_WINDOW_SLACK = 10
MAX_WINDOW = 5000
_COLUMNS = ("open", "high", "low", "close", "volume")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


@dataclass(frozen=True)
class CompiledCondition:
    """A validated condition: its canonical text, AST and the bars it needs."""

    text: str
    node: Node
    lookback: int  # bars before the first value
    session: bool  # uses minute-session functions (vwap, opening range)

    @property
    def window(self) -> int:
        """Bars kept per ticker for this condition."""
        return min(MAX_WINDOW, max(self.lookback * _WINDOW_FACTOR + _WINDOW_SLACK, 2))


@functools.lru_cache(maxsize=4096)
def compile_condition(text: str) -> CompiledCondition:
    """Parse and type-check ``text``; ValidationError naming the problem (and column)."""
    from falcon.strategy.expr import ExprError, parse, to_text
    from falcon.strategy.functions import analyze

    try:
        node = parse(text)
        found = analyze(node, {}, timeframe="minute")
    except ExprError as exc:
        raise ValidationError(f"condition {text!r}: {exc}") from None
    if found.kind != "bool":
        raise ValidationError(
            f"condition {text!r}: must be true or false, e.g. 'rsi(close, 14) < 30'"
        )
    if found.lookback + 1 > MAX_WINDOW:
        raise ValidationError(f"condition {text!r}: needs more than {MAX_WINDOW} bars of history")
    return CompiledCondition(to_text(node), node, found.lookback, found.session)


@dataclass(frozen=True)
class _OneRule:
    """The slice of a StrategySpec that ``compile_signals`` reads, for a single condition."""

    rules: dict[str, Node]
    params: dict[str, float] = field(default_factory=dict)
    uses_session: bool = False
    atr_period: int | None = None


class _Ring:
    """The last ``size`` bars of one ticker, as numpy columns (amortised O(1) append)."""

    __slots__ = ("cols", "end", "size", "start", "ts")

    def __init__(self, size: int) -> None:
        self.size = size
        cap = 2 * size
        self.ts = np.zeros(cap, dtype=np.int64)
        self.cols = np.zeros((len(_COLUMNS), cap), dtype=np.float64)
        self.start = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, bar: Bar) -> None:
        if self.end == self.ts.shape[0]:
            # Full: keep the newest size-1 bars at the front (one memmove per `size` appends).
            keep = self.size - 1
            self.ts[:keep] = self.ts[self.end - keep : self.end]
            self.cols[:, :keep] = self.cols[:, self.end - keep : self.end]
            self.start, self.end = 0, keep
        i = self.end
        self.ts[i] = (bar.ts - _EPOCH) // _MICRO * 1000
        self.cols[0, i] = bar.open
        self.cols[1, i] = bar.high
        self.cols[2, i] = bar.low
        self.cols[3, i] = bar.close
        self.cols[4, i] = bar.volume
        self.end += 1
        if self.end - self.start > self.size:
            self.start += 1

    def grow(self, size: int) -> None:
        if size <= self.size:
            return
        n = len(self)
        old_ts, old_cols = self.ts[self.start : self.end], self.cols[:, self.start : self.end]
        self.size = size
        self.ts = np.zeros(2 * size, dtype=np.int64)
        self.cols = np.zeros((len(_COLUMNS), 2 * size), dtype=np.float64)
        self.ts[:n] = old_ts
        self.cols[:, :n] = old_cols
        self.start, self.end = 0, n


class Windows:
    """Rolling windows of every ticker that has an indicator rule."""

    def __init__(self) -> None:
        self._rings: dict[str, _Ring] = {}

    def want(self, ticker: str, size: int) -> None:
        """Keep at least ``size`` bars of ``ticker`` from now on."""
        ring = self._rings.get(ticker)
        if ring is None:
            self._rings[ticker] = _Ring(size)
        else:
            ring.grow(size)

    def tracks(self, ticker: str) -> bool:
        """True when ``ticker`` has a window."""
        return ticker in self._rings

    def push(self, bar: Bar) -> None:
        """Add ``bar`` to its ticker's window (ignored for untracked tickers)."""
        ring = self._rings.get(bar.ticker)
        if ring is not None:
            ring.append(bar)

    def count(self, ticker: str) -> int:
        """Bars currently held for ``ticker``."""
        ring = self._rings.get(ticker)
        return 0 if ring is None else len(ring)

    def frame(self, tickers: Sequence[str]) -> tuple[pl.DataFrame, np.ndarray]:
        """The windows of ``tickers`` as one frame (sorted by ticker, ts) and each last row."""
        rings = [self._rings[t] for t in tickers]
        lengths = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
        data: dict[str, Any] = {
            "ticker": pl.Series("ticker", tickers, dtype=pl.String).gather(
                np.repeat(np.arange(len(tickers)), lengths)
            ),
            "ts": pl.Series(
                "ts", np.concatenate([r.ts[r.start : r.end] for r in rings])
            ).cast(pl.Datetime("ns", "UTC")),
        }
        for j, name in enumerate(_COLUMNS):
            data[name] = np.concatenate([r.cols[j, r.start : r.end] for r in rings])
        return pl.DataFrame(data), np.cumsum(lengths) - 1


def evaluate(cond: CompiledCondition, windows: Windows, tickers: Sequence[str]) -> dict[str, bool]:
    """The condition's value on the newest bar of each of ``tickers`` (one polars query).

    Tickers without enough history for a first value are left out (their value is unknown).
    """
    from falcon.strategy.compile import compile_signals

    ready = [t for t in tickers if windows.count(t) > cond.lookback]
    if not ready:
        return {}
    df, last = windows.frame(ready)
    spec = cast("StrategySpec", _OneRule({"entry_long": cond.node}, uses_session=cond.session))
    out = compile_signals(spec, df).select("entry_long").collect()
    values = out.to_series().gather(last).to_list()
    return {t: bool(v) for t, v in zip(ready, values, strict=True)}
