"""Falcon: a self-hosted screener, backtester and paper trader for US equities."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("falcon-trader")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
