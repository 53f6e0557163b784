"""The NYSE calendar: holidays, one-off closures, early closes, DST and the edges of its range."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from falcon import calendar as cal


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    "day",
    [
        date(2024, 7, 4),  # Independence Day
        date(2024, 3, 29),  # Good Friday
        date(2025, 1, 9),  # national day of mourning for President Carter
        date(2012, 10, 29),  # hurricane Sandy
        date(2024, 12, 25),
        date(2024, 1, 15),  # Martin Luther King Jr. Day
        date(2022, 6, 20),  # Juneteenth (observed), first year
        date(2024, 7, 6),  # a Saturday
    ],
)
def test_closed_days_are_not_trading_days(day: date) -> None:
    assert not cal.is_trading_day(day)
    with pytest.raises(cal.CalendarError, match="not an NYSE trading day"):
        cal.session_open_close(day)


def test_ordinary_days_are_trading_days() -> None:
    assert cal.is_trading_day(date(2024, 7, 5))
    assert cal.is_trading_day("2025-01-10")
    assert cal.is_trading_day(date(1990, 1, 2))


def test_holidays_lists_weekday_closures() -> None:
    assert cal.holidays(date(2025, 1, 1), date(2025, 1, 31)) == [
        date(2025, 1, 1),
        date(2025, 1, 9),
        date(2025, 1, 20),
    ]


def test_trading_days_counts_a_year_and_is_inclusive() -> None:
    assert len(cal.trading_days(date(2024, 1, 1), date(2024, 12, 31))) == 252
    days = cal.trading_days(date(2024, 12, 20), date(2025, 1, 3))
    assert days[0] == date(2024, 12, 20) and days[-1] == date(2025, 1, 3)
    assert date(2024, 12, 25) not in days and date(2025, 1, 1) not in days
    assert cal.trading_days(date(2024, 1, 5), date(2024, 1, 4)) == []


def test_regular_session_times_follow_daylight_saving() -> None:
    # Winter: 9:30-16:00 New York is 14:30-21:00 UTC; summer (EDT) is an hour earlier in UTC.
    assert cal.session_open_close(date(2024, 3, 8)) == (
        utc(2024, 3, 8, 14, 30),
        utc(2024, 3, 8, 21),
    )
    assert cal.session_open_close(date(2024, 3, 11)) == (
        utc(2024, 3, 11, 13, 30),
        utc(2024, 3, 11, 20),
    )
    assert cal.session_open_close(date(2024, 11, 1))[0] == utc(2024, 11, 1, 13, 30)
    assert cal.session_open_close(date(2024, 11, 4))[0] == utc(2024, 11, 4, 14, 30)


def test_early_closes_at_one_pm_new_york() -> None:
    assert cal.session_open_close(date(2024, 11, 29))[1] == utc(2024, 11, 29, 18)  # Black Friday
    assert cal.session_open_close(date(2024, 7, 3))[1] == utc(2024, 7, 3, 17)  # EDT
    assert cal.is_early_close(date(2024, 12, 24))
    assert not cal.is_early_close(date(2024, 12, 23))


def test_previous_and_next_skip_closures() -> None:
    assert cal.previous_trading_day(date(2025, 1, 10)) == date(2025, 1, 8)
    assert cal.next_trading_day(date(2024, 3, 28)) == date(2024, 4, 1)
    assert cal.next_trading_day(date(2024, 7, 6)) == date(2024, 7, 8)  # from a Saturday
    assert cal.previous_trading_day(date(2024, 7, 8)) == date(2024, 7, 5)


def test_last_completed_session() -> None:
    # Before the close, today's session is not completed yet.
    assert cal.last_completed_session(utc(2024, 7, 5, 19, 59)) == date(2024, 7, 3)
    assert cal.last_completed_session(utc(2024, 7, 5, 20, 0)) == date(2024, 7, 5)
    # The early close on 2024-07-03 completes at 17:00 UTC.
    assert cal.last_completed_session(utc(2024, 7, 3, 17, 0)) == date(2024, 7, 3)
    # A Sunday evening in New York is already Monday in UTC.
    assert cal.last_completed_session(utc(2024, 7, 8, 2, 0)) == date(2024, 7, 5)


def test_is_open_boundaries() -> None:
    assert not cal.is_open(utc(2024, 7, 5, 13, 29))
    assert cal.is_open(utc(2024, 7, 5, 13, 30))
    assert cal.is_open(utc(2024, 7, 5, 19, 59))
    assert not cal.is_open(utc(2024, 7, 5, 20, 0))
    assert not cal.is_open(utc(2024, 11, 29, 18, 30))  # after the early close
    assert not cal.is_open(utc(2024, 7, 4, 15, 0))  # holiday


def test_next_open_and_session_date() -> None:
    assert cal.next_open(utc(2024, 7, 3, 18)) == utc(2024, 7, 5, 13, 30)
    assert cal.next_open(utc(2024, 7, 5, 13, 30)) == utc(2024, 7, 8, 13, 30)
    assert cal.session_date(utc(2024, 7, 6, 2, 0)) == date(2024, 7, 5)


def test_naive_datetimes_and_bad_dates_are_refused() -> None:
    with pytest.raises(cal.CalendarError, match="no time zone"):
        cal.is_open(datetime(2024, 7, 5, 15))
    with pytest.raises(cal.CalendarError, match="not a date"):
        cal.is_trading_day("July 5th")


def test_range_covers_1990_to_the_year_after_next() -> None:
    first, last = cal.bounds()
    assert first == date(1990, 1, 1)
    assert last.year >= datetime.now(UTC).year + 2
    assert len(cal.trading_days(date(last.year, 1, 1), last)) > 240
    with pytest.raises(cal.CalendarError, match="outside"):
        cal.is_trading_day(date(1989, 12, 29))
    with pytest.raises(cal.CalendarError, match="outside"):
        cal.trading_days(date(2024, 1, 1), last + timedelta(days=1))


_PROBE = """
import json, sys
from datetime import date
from falcon import calendar as c
days = c.trading_days(date(1990, 1, 1), c.bounds()[1])
out = {"days": [d.isoformat() for d in days],
       "open_close": [[t.isoformat() for t in c.session_open_close(d)] for d in days],
       "early": [d.isoformat() for d in days if c.is_early_close(d)],
       "pandas": "pandas" in sys.modules, "xcals": "exchange_calendars" in sys.modules}
print(json.dumps(out))
"""


def _probe(home: Path) -> dict[str, Any]:
    env = {**os.environ, "FALCON_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          text=True, check=True)
    return cast(dict[str, Any], json.loads(done.stdout))


def test_sessions_cache_gives_the_same_calendar_without_pandas(tmp_path: Path) -> None:
    built = _probe(tmp_path)  # builds XNYS and writes the cache
    assert built["xcals"] and built["pandas"]
    [cache] = (tmp_path / "cache").glob("xnys-*.json")
    cached = _probe(tmp_path)
    assert not cached["xcals"] and not cached["pandas"]  # ~95 MB and a second saved
    for key in ("days", "open_close", "early"):
        assert cached[key] == built[key]
    assert "2025-01-09" not in cached["days"]  # a one-off closure survives the round trip
    assert "2024-11-29" in cached["early"]
    # A damaged cache is not trusted: the calendar is built again (and the file rewritten).
    cache.write_text('{"days": [1, 2], "opens": [0]}')
    again = _probe(tmp_path)
    assert again["xcals"] and again["days"] == built["days"]
    first = date.fromisoformat(built["days"][0]).toordinal()
    assert json.loads(cache.read_text())["days"][0] == first
