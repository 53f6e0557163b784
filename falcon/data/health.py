"""Checks of the market-data store for ``falcon doctor`` and ``/healthz``."""

from __future__ import annotations

from collections.abc import Callable

from falcon.config import Settings


def data_checks(settings: Settings) -> list[tuple[str, Callable[[], str]]]:
    """(name, check) pairs; a check returns a detail line or raises a FalconError."""

    def store() -> str:
        path = settings.market_data_dir
        return f"{path} ({'present' if path.exists() else 'empty: run `falcon data sample`'})"

    return [("data store", store)]
