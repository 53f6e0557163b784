"""Strategy signals bar by bar: a streaming evaluator per strategy, fed each batch once.

Each :class:`StrategySlot` gets a :class:`SlotStream` holding a
:class:`falcon.strategy.SignalStream`: per ticker, the state every function of its rules needs
(ring buffers, running sums, Wilder averages, session accumulators) in numpy arrays, advanced by
one vectorised step per batch (one timestamp, many tickers). The values are those
:func:`falcon.strategy.compile_signals` gives on the whole history the trader has seen -- exactly
what the backtester computes -- not an approximation on a window, so a replay makes the
backtest's trades. After a restart the trader warms the streams up by feeding them the stored
history (``Trader.warm``), which rebuilds the same state.

:class:`Windows` keeps only the start times of each ticker's last few bars, for ``max_bars``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Container, Sequence
from dataclasses import dataclass

import numpy as np

from falcon.domain.market import Bar
from falcon.strategy import SignalStream, StrategySpec

__all__ = ["BarColumns", "Signal", "SlotStream", "StrategySlot", "Windows"]

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
    margin: int = 50  # kept for callers; the streaming evaluator needs no window margin

    @property
    def length(self) -> int:
        """Bars of start times kept per ticker (for ``max_bars``)."""
        extra = self.spec.risk.max_bars or 0
        return max(extra + 2, 3)

    def trades(self, ticker: str) -> bool:
        """True when ``ticker`` is in this strategy's universe."""
        return self.tickers is None or ticker in self.tickers


class Windows:
    """The start times of each ticker's last ``size`` bars, newest last (for ``max_bars``)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window size must be >= 1")
        self.size = size
        self.index: dict[str, int] = {}
        cap = 16
        self.ts = np.zeros((cap, size), dtype=np.int64)
        self.count = np.zeros(cap, dtype=np.int64)

    def _row(self, ticker: str) -> int:
        row = self.index.get(ticker)
        if row is not None:
            return row
        row = len(self.index)
        if row >= len(self.count):
            grow = len(self.count)
            self.ts = np.vstack([self.ts, np.zeros((grow, self.size), dtype=np.int64)])
            self.count = np.concatenate([self.count, np.zeros(grow, dtype=np.int64)])
        self.index[ticker] = row
        return row

    def push(self, bars: BarColumns) -> None:
        """Append one bar per ticker (a batch of one timestamp); the oldest falls out."""
        if not bars.tickers:
            return
        rows = np.fromiter((self._row(t) for t in bars.tickers), dtype=np.int64,
                           count=len(bars.tickers))
        if self.size > 1:
            self.ts[rows, :-1] = self.ts[rows, 1:]
        self.ts[rows, -1] = bars.ts_ns
        self.count[rows] = np.minimum(self.count[rows] + 1, self.size)

    def held(self, ticker: str, since_ns: int) -> int:
        """Bars in the window of ``ticker`` that start at or after ``since_ns``."""
        row = self.index.get(ticker)
        if row is None:
            return 0
        n = int(self.count[row])
        return int(np.count_nonzero(self.ts[row, self.size - n :] >= since_ns))


@dataclass(frozen=True)
class BarColumns:
    """One batch's bars as columns (built once, shared by every strategy)."""

    tickers: tuple[str, ...]
    ts_ns: int
    values: dict[str, np.ndarray]

    @classmethod
    def of(cls, bars: Sequence[Bar]) -> BarColumns:
        """The columns of ``bars`` (one timestamp, one bar per ticker)."""
        ts_ns = int(bars[0].ts.timestamp() * 1_000_000) * 1000 if bars else 0
        getter = operator.attrgetter(*_FIELDS)  # one C call per bar for every field
        table = np.array([getter(b) for b in bars], dtype=np.float64).reshape(len(bars),
                                                                              len(_FIELDS))
        values = {f: np.ascontiguousarray(table[:, i]) for i, f in enumerate(_FIELDS)}
        return cls(tuple(b.ticker for b in bars), ts_ns, values)


class SlotStream:
    """A strategy slot's streaming signals: every bar of its universe goes through it once."""

    def __init__(self, slot: StrategySlot) -> None:
        self.slot = slot
        self.stream = SignalStream(slot.spec)

    def push(self, bars: BarColumns, owned: Container[str] | None = None) -> dict[str, Signal]:
        """Advance the slot's tickers among ``bars``; the signals on their new bars.

        Only tickers that can lead to a decision are returned: those with an entry signal, and
        those in ``owned`` (positions this slot opened) with an exit signal, or every one of
        them when the slot has ``max_bars`` (a position's age is judged on every bar). A
        position with neither leads to no decision, so it is not looked at: with hundreds of
        positions, most bars of most of them. ``owned=None``: all.
        """
        tickers, values = bars.tickers, bars.values
        if self.slot.tickers is not None:
            keep = [i for i, t in enumerate(tickers) if self.slot.trades(t)]
            if len(keep) != len(tickers):
                idx = np.array(keep, dtype=np.int64)
                tickers = tuple(tickers[i] for i in keep)
                values = {f: v[idx] for f, v in values.items()}
        if not tickers:
            return {}
        out = self.stream.update(bars.ts_ns, tickers, **values)
        if owned is None:
            wanted: Sequence[int] = range(len(tickers))
        else:
            entry = np.flatnonzero(out.entry_long | out.entry_short).tolist()
            if self.slot.spec.risk.max_bars is None:
                exits = out.exit_long | out.exit_short
                mine = [i for i in np.flatnonzero(exits).tolist() if tickers[i] in owned]
            else:
                mine = [i for i, t in enumerate(tickers) if t in owned]
            wanted = sorted(set(entry).union(mine))
        atr = out.atr
        signals: dict[str, Signal] = {}
        for i in wanted:
            a = None
            if atr is not None and math.isfinite(atr[i]):
                a = float(atr[i])
            signals[tickers[i]] = Signal(bool(out.entry_long[i]), bool(out.exit_long[i]),
                                         bool(out.entry_short[i]), bool(out.exit_short[i]), a)
        return signals
