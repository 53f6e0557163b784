"""Risk and sizing rules of a strategy, as the engines consume them.

The strategy spec (JSON) is parsed into these frozen values by ``falcon.strategy``; the backtester
and the paper trader read only these, so the two cannot disagree about what a rule means.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    """Which sides a strategy may trade."""

    LONG_ONLY = "long_only"
    LONG_SHORT = "long_short"


class StopKind(StrEnum):
    """How a stop or target distance is measured from the entry price."""

    PERCENT = "percent"  # value is a fraction: 0.05 = 5 % from entry
    ATR = "atr"  # value is a multiple of ATR(atr_period) on the signal bar


@dataclass(frozen=True, kw_only=True)
class Level:
    """A stop loss, take profit or trailing-stop distance."""

    kind: StopKind
    value: float
    atr_period: int = 14

    def __post_init__(self) -> None:
        if not self.value > 0:
            raise ValueError(f"a {self.kind} level must be > 0, got {self.value}")
        if self.atr_period < 1:
            raise ValueError("atr_period must be >= 1")


class SizingKind(StrEnum):
    """How many shares an entry buys."""

    ALL_IN = "all_in"  # floor(cash / (price * (1 + commission)))
    FRACTION = "fraction"  # value = fraction of equity, e.g. 0.1
    RISK = "risk"  # value = fraction of equity at risk between entry and the stop
    SHARES = "shares"  # value = a fixed number of shares


@dataclass(frozen=True, kw_only=True)
class Sizing:
    """Position sizing of a strategy."""

    kind: SizingKind = SizingKind.ALL_IN
    value: float = 1.0

    def __post_init__(self) -> None:
        if not self.value > 0:
            raise ValueError("sizing value must be > 0")
        if self.kind in (SizingKind.FRACTION, SizingKind.RISK) and self.value > 1:
            raise ValueError(f"{self.kind} sizing is a fraction of equity in (0, 1]")


@dataclass(frozen=True, kw_only=True)
class RiskRules:
    """Exits and limits beyond the strategy's own exit conditions."""

    stop_loss: Level | None = None
    take_profit: Level | None = None
    trailing_stop: Level | None = None
    max_bars: int | None = None
    max_positions: int = 1
    direction: Direction = Direction.LONG_ONLY
    sizing: Sizing = Sizing()

    def __post_init__(self) -> None:
        if self.max_bars is not None and self.max_bars < 1:
            raise ValueError("max_bars must be >= 1")
        if self.max_positions < 1:
            raise ValueError("max_positions must be >= 1")
