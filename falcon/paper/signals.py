"""Strategy signals bar by bar: a rolling window per ticker, evaluated by the strategy compiler.

The trader keeps the last ``size`` bars of every watched ticker in numpy arrays (one row per
ticker) and, for each timestamp batch, builds one polars frame of the windows of the tickers that
got a bar, runs :func:`falcon.strategy.compile_signals` on it *once per strategy* and reads the last
row of each ticker. One call per batch rather than per bar: the compiler's fixed cost (planning a
lazy query) is most of its time on small frames.

A window of ``spec.warmup_bars + margin`` bars gives exactly the values a full history would for
windowed indicators (SMA, rolling max/min, Bollinger); recursive ones (EMA, Wilder's RSI/ATR)
depend on where they were seeded and only converge to the full-history value, which is why the
margin is generous by default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from falcon.domain.market import Bar
from falcon.strategy import StrategySpec, compile_signals

__all__ = ["Signal", "StrategySlot", "Windows", "evaluate"]

_FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class Signal:
    """The four signal flags of one ticker's newest bar (and its ATR when the spec has one)."""

    entry_long: bool
    exit_long: bool
    entry_short: bool
    exit_short: bool
    atr: float | None = None


@dataclass(frozen=True)
class StrategySlot:
    """A strategy the trader runs: its spec, the tickers it trades (None: every watched one)."""

    name: str
    spec: StrategySpec
    tickers: frozenset[str] | None = None
    margin: int = 50

    @property
    def length(self) -> int:
        """Bars of history evaluated per decision."""
        extra = self.spec.risk.max_bars or 0
        return max(self.spec.warmup_bars + self.margin, extra + 2, 3)

    def trades(self, ticker: str) -> bool:
        """True when ``ticker`` is in this strategy's universe."""
        return self.tickers is None or ticker in self.tickers


class Windows:
    """The last ``size`` bars of each ticker, newest last, in preallocated numpy rows."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window size must be >= 1")
        self.size = size
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        cap = 16
        self.ts = np.zeros((cap, size), dtype=np.int64)
        self.data = {f: np.zeros((cap, size), dtype=np.float64) for f in _FIELDS}
        self.count = np.zeros(cap, dtype=np.int64)

    def _row(self, ticker: str) -> int:
        row = self.index.get(ticker)
        if row is not None:
            return row
        row = len(self.names)
        if row >= len(self.count):
            grow = len(self.count)
            self.ts = np.vstack([self.ts, np.zeros((grow, self.size), dtype=np.int64)])
            for f in _FIELDS:
                self.data[f] = np.vstack([self.data[f], np.zeros((grow, self.size))])
            self.count = np.concatenate([self.count, np.zeros(grow, dtype=np.int64)])
        self.index[ticker] = row
        self.names.append(ticker)
        return row

    def push(self, bars: Sequence[Bar]) -> None:
        """Append one bar per ticker (a batch of one timestamp); the oldest falls out."""
        if not bars:
            return
        rows = np.fromiter((self._row(b.ticker) for b in bars), dtype=np.int64, count=len(bars))
        ns = np.fromiter((int(b.ts.timestamp() * 1_000_000) * 1000 for b in bars),
                         dtype=np.int64, count=len(bars))
        self.ts[rows, :-1] = self.ts[rows, 1:]
        self.ts[rows, -1] = ns
        for f in _FIELDS:
            arr = self.data[f]
            arr[rows, :-1] = arr[rows, 1:]
            arr[rows, -1] = np.fromiter((getattr(b, f) for b in bars), dtype=np.float64,
                                        count=len(bars))
        self.count[rows] = np.minimum(self.count[rows] + 1, self.size)

    def held(self, ticker: str, since_ns: int) -> int:
        """Bars in the window of ``ticker`` that start at or after ``since_ns``."""
        row = self.index.get(ticker)
        if row is None:
            return 0
        n = int(self.count[row])
        return int(np.count_nonzero(self.ts[row, self.size - n :] >= since_ns))

    def frame(
        self, tickers: Iterable[str], length: int
    ) -> tuple[pl.DataFrame, list[str], np.ndarray]:
        """The last ``length`` bars of ``tickers`` (sorted by ticker, ts), the tickers in it and
        how many rows each has."""
        names = sorted(t for t in set(tickers) if t in self.index)
        if not names:
            return pl.DataFrame(), [], np.zeros(0, dtype=np.int64)
        rows = np.array([self.index[t] for t in names], dtype=np.int64)
        span = min(length, self.size)
        counts = np.minimum(self.count[rows], span)
        mask = np.arange(span)[None, :] >= (span - counts)[:, None]
        cols: dict[str, object] = {
            "ticker": np.repeat(np.array(names, dtype=object), counts),
            "ts": pl.Series(self.ts[rows, -span:][mask]).cast(pl.Datetime("ns", "UTC")),
        }
        for f in _FIELDS:
            cols[f] = self.data[f][rows, -span:][mask]
        return pl.DataFrame(cols), names, counts


def evaluate(slot: StrategySlot, windows: Windows, tickers: Iterable[str]) -> dict[str, Signal]:
    """Signals of ``slot`` on the newest bar of each of ``tickers``."""
    frame, names, counts = windows.frame((t for t in tickers if slot.trades(t)), slot.length)
    if not names:
        return {}
    out = compile_signals(slot.spec, frame).collect()
    last = np.cumsum(counts) - 1
    flags = {c: out[c].to_numpy()[last] for c in ("entry_long", "exit_long", "entry_short",
                                                 "exit_short")}
    atr = out["atr"].to_numpy()[last] if "atr" in out.columns else None
    signals: dict[str, Signal] = {}
    for i, name in enumerate(names):
        a = None
        if atr is not None:
            value = float(atr[i]) if atr[i] is not None else math.nan
            a = value if math.isfinite(value) else None
        signals[name] = Signal(
            bool(flags["entry_long"][i]),
            bool(flags["exit_long"][i]),
            bool(flags["entry_short"][i]),
            bool(flags["exit_short"][i]),
            a,
        )
    return signals
