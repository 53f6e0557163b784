"""Market data as the engines see it: one OHLCV bar."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One OHLCV bar of one ticker; ``ts`` is the bar's start, in UTC."""

    ticker: str
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0

    def __post_init__(self) -> None:
        prices = (self.open, self.high, self.low, self.close)
        if not all(math.isfinite(p) and p > 0 for p in prices):
            raise ValueError(f"{self.ticker} {self.ts}: prices must be finite and > 0")
        if self.low > min(self.open, self.close) or self.high < max(self.open, self.close):
            raise ValueError(f"{self.ticker} {self.ts}: open/close outside low..high")
