"""Checks of the market-data store for ``falcon doctor`` and ``/healthz``."""

from __future__ import annotations

from collections.abc import Callable

from falcon.config import Settings
from falcon.errors import DataError


def data_checks(settings: Settings) -> list[tuple[str, Callable[[], str]]]:
    """(name, check) pairs; a check returns a detail line or raises a FalconError."""
    from falcon.data.store import Store

    store = Store.of(settings)

    def present() -> str:
        path = settings.market_data_dir
        return f"{path} ({'present' if path.exists() else 'empty: run `falcon data sample`'})"

    def coverage() -> str:
        from falcon.data.status import kind_status

        day = kind_status(store, "day")
        if day.sessions == 0:
            return "no day bars yet: run `falcon data sample` or `falcon data sync`"
        detail = f"day bars {day.first_date}..{day.last_date}, {day.tickers} tickers"
        if day.missing:
            shown = ", ".join(str(d) for d in day.missing[:3])
            raise DataError(
                f"{detail}: {len(day.missing)} session(s) missing ({shown}"
                f"{' ...' if len(day.missing) > 3 else ''}): run `falcon data sync`"
            )
        return f"{detail}, no session missing"

    def freshness() -> str:
        from falcon import calendar

        dates = store.dates("day")
        if not dates:
            return "no day bars yet"
        last = dates[-1]
        expected = calendar.last_completed_session()
        lo, _ = calendar.bounds()
        behind = len(calendar.trading_days(max(last, lo), expected)) - 1 if last < expected else 0
        if behind < settings.data.stale_after_days:
            return f"last session {last} ({behind} behind {expected})"
        if not settings.secrets.s3_access_key_id:
            # Sample-only install: old data is expected, there is nothing to sync from.
            return f"last session {last}, {behind} sessions old (no S3 credentials: sample data)"
        raise DataError(
            f"last session {last} is {behind} sessions behind {expected} "
            f"(limit {settings.data.stale_after_days}): is `falcon data sync` running?"
        )

    return [("data store", present), ("data coverage", coverage), ("data freshness", freshness)]
