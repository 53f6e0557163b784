"""Indicator conditions: the strategy language evaluated incrementally on each ticker's bars.

A condition such as ``rsi(close, 14) < 30`` is parsed and type-checked with the strategy package's
own parser and whitelist (nothing is ever run as Python), then evaluated by the strategy package's
streaming evaluator (:class:`falcon.strategy.ExpressionStream`), so an alert and a backtest agree
on what ``rsi`` means -- to the value, not to a window's approximation: the evaluator keeps each
function's state per ticker (running sums, Wilder averages, session accumulators) and advances
every ticker of a batch with a few numpy operations, O(1) per bar, no polars.

Each ticker also keeps its last W bars in numpy ring buffers (W is eight times the condition's
look-back plus slack). A condition's stream is fed each ticker's bars once, in order, when it is
evaluated; the first time a condition meets a ticker (a new rule, a restart) it warms up on the
bars the ring holds, so its values are those of the full history from the ring's first bar on.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from falcon.domain.market import Bar
from falcon.errors import ValidationError

if TYPE_CHECKING:
    from falcon.strategy.expr import Node
    from falcon.strategy.stream import ExpressionStream

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
        self._seq: dict[str, int] = {}  # bars ever pushed per ticker
        self._streams: dict[str, _ConditionStream] = {}  # by condition text

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
            self._seq[bar.ticker] = self._seq.get(bar.ticker, 0) + 1

    def count(self, ticker: str) -> int:
        """Bars currently held for ``ticker``."""
        ring = self._rings.get(ticker)
        return 0 if ring is None else len(ring)


class _ConditionStream:
    """One condition's streaming evaluator and how far it has read each ticker's bars."""

    def __init__(self, cond: CompiledCondition) -> None:
        from falcon.strategy.stream import ExpressionStream

        self.stream: ExpressionStream = ExpressionStream({"c": cond.text}, timeframe="minute")
        self.fed: dict[str, int] = {}  # Windows._seq of the last bar fed, per ticker
        self.count: dict[str, int] = {}  # bars fed per ticker
        self.last: dict[str, bool] = {}  # the value on the last bar fed

    def catch_up(self, windows: Windows, tickers: Sequence[str]) -> None:
        """Feed each ticker the bars pushed since the last call, in rounds of one bar each."""
        todo: list[tuple[str, _Ring, int]] = []  # ticker, ring, bars to feed
        for t in tickers:
            ring = windows._rings[t]
            behind = windows._seq.get(t, 0) - self.fed.get(t, 0)
            if behind > 0:
                # Bars older than the ring are gone: start (or go on) from what it holds.
                todo.append((t, ring, min(behind, len(ring))))
                self.fed[t] = windows._seq.get(t, 0)
        depth = max((n for _, _, n in todo), default=0)
        for k in range(depth, 0, -1):  # k bars back from the newest, oldest first
            groups: dict[int, list[tuple[str, _Ring]]] = {}
            for t, ring, n in todo:
                if n >= k:
                    groups.setdefault(int(ring.ts[ring.end - k]), []).append((t, ring))
            for ts, members in sorted(groups.items()):
                idx = [ring.end - k for _, ring in members]
                cols = np.stack([ring.cols[:, i] for (_, ring), i in
                                 zip(members, idx, strict=True)], axis=1)
                names = [t for t, _ in members]
                values = self.stream.update(
                    ts, names, {c: cols[j] for j, c in enumerate(_COLUMNS)})["c"]
                for t, v in zip(names, values.tolist(), strict=True):
                    self.last[t] = v == 1.0  # null (NaN) is false, as compile_signals fills it
                    self.count[t] = self.count.get(t, 0) + 1


def evaluate(cond: CompiledCondition, windows: Windows, tickers: Sequence[str]) -> dict[str, bool]:
    """The condition's value on the newest bar of each of ``tickers`` (tracked by ``windows``).

    Tickers without enough history for a first value are left out (their value is unknown).
    """
    stream = windows._streams.get(cond.text)
    if stream is None:
        stream = windows._streams[cond.text] = _ConditionStream(cond)
    tracked = [t for t in tickers if windows.tracks(t)]
    stream.catch_up(windows, tracked)
    return {t: stream.last[t] for t in tracked if stream.count.get(t, 0) > cond.lookback}
