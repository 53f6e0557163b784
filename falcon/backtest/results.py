"""The backtester's frozen config and its read-only result."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from falcon.domain.rules import RiskRules
from falcon.execution.fills import CostModel


@dataclass(frozen=True, kw_only=True)
class BacktestConfig:
    """How the simulated broker behaves (the strategy's own rules are in :class:`RiskRules`).

    ``commission`` is a fraction of notional, ``commission_per_share`` a fee per share, both
    charged on entry and on exit; ``slippage_bps`` moves market and stop fills against the
    trader (limit fills, i.e. take profits, get their limit price).
    """

    cash: float = 10_000.0
    commission: float = 0.0
    commission_per_share: float = 0.0
    slippage_bps: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cash) and self.cash > 0):
            raise ValueError("cash must be > 0")
        self.costs  # noqa: B018 - validates the cost fields once, here

    @property
    def costs(self) -> CostModel:
        """The fill model's costs."""
        return CostModel(
            commission=self.commission,
            commission_per_share=self.commission_per_share,
            slippage_bps=self.slippage_bps,
        )


TRADE_SCHEMA_DOC = """\
ticker, side ("long"/"short"), qty, entry_ts, entry_price, exit_ts, exit_price,
pnl (net of both commissions), return_pct (net, % of entry notional), exit_reason
("signal", "stop_loss", "take_profit", "trailing_stop", "max_bars"), bars_held (exit bar index
minus entry bar index: 0 when a stop hits inside the entry bar), fees.
"""


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest produced; read-only.

    * ``trades``: closed trades, one row each (columns in ``TRADE_SCHEMA_DOC``);
    * ``open_trades``: positions still open after the last bar, marked at their last close
      (``exit_*`` null, ``pnl`` unrealized, net of the entry commission); they count in the final
      equity but not in the trade statistics, as in backtesting.py;
    * ``equity``: ``ts, equity, cash`` at every bar close of the data (all tickers' timestamps);
    * ``rejections``: entries that were not made: ``ticker, ts, side, reason`` (risk_limit when
      max_positions was reached or no ATR was available, insufficient_cash);
    * ``metrics``: see :mod:`falcon.backtest.metrics`.
    """

    trades: pl.DataFrame
    open_trades: pl.DataFrame
    equity: pl.DataFrame
    rejections: pl.DataFrame
    metrics: Mapping[str, Any]
    risk: RiskRules
    config: BacktestConfig

    @property
    def final_equity(self) -> float:
        """Equity after the last bar."""
        return float(self.metrics["final_equity"])
