"""falcon.backtest."""
