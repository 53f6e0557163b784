"""The portfolio backtester: ``run_backtest(signals, risk=..., config=...)``.

Conventions are written down in :mod:`falcon.backtest.engine` and
:mod:`falcon.execution.fills`; metrics in :mod:`falcon.backtest.metrics`.
"""

from falcon.backtest.engine import run_backtest
from falcon.backtest.results import BacktestConfig, BacktestResult

__all__ = ["BacktestConfig", "BacktestResult", "run_backtest"]
