"""The NYSE calendar: sessions, holidays, early closes and session times.

Built on exchange-calendars' ``XNYS`` (which knows the one-off closures too, such as the national
days of mourning of 2007, 2012's hurricane Sandy and 2025-01-09). Dates are session dates in
America/New_York; times are aware UTC :class:`~datetime.datetime` values.

Building the calendar takes a second or two, so it is built once per process, lazily (or read
from a cache file another process wrote, see ``_read_cache``), and its
sessions are copied into plain sorted lists: every later look-up is a bisect, with no pandas in the
hot path. The calendar covers 1990-01-01 to the end of the year after next; asking outside that
raises :class:`CalendarError`.
"""

from __future__ import annotations

import bisect
import functools
import importlib.metadata
import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from falcon.errors import FalconError

NEW_YORK = ZoneInfo("America/New_York")
FIRST_DATE = date(1990, 1, 1)


class CalendarError(FalconError, ValueError):
    """A date outside the calendar's range, or a day that is not a session where one is needed."""


def _last_date() -> date:
    return date(datetime.now(UTC).year + 2, 12, 31)


@dataclass(frozen=True)
class _Sessions:
    days: list[date]
    ordinals: list[int]
    opens: list[datetime]
    closes: list[datetime]
    early: frozenset[date]
    first: date
    last: date


@functools.cache
def _sessions() -> _Sessions:
    last = _last_date()
    cached = _read_cache(last)
    if cached is not None:
        return cached
    import exchange_calendars as xcals

    cal = xcals.get_calendar("XNYS", start=FIRST_DATE.isoformat(), end=last.isoformat())
    days = [ts.date() for ts in cal.sessions]
    opens = [ts.to_pydatetime().astimezone(UTC) for ts in cal.opens]
    closes = [ts.to_pydatetime().astimezone(UTC) for ts in cal.closes]
    early = frozenset(ts.date() for ts in cal.early_closes)
    sessions = _Sessions(
        days=days,
        ordinals=[d.toordinal() for d in days],
        opens=opens,
        closes=closes,
        early=early,
        first=FIRST_DATE,
        last=last,
    )
    _write_cache(sessions)
    return sessions


# --- the sessions cache -------------------------------------------------------------------------
#
# Building XNYS imports pandas and exchange-calendars: about 95 MB of memory in every process
# (each gunicorn worker, the trader, the scheduler; a Raspberry Pi has 4-8 GB for everything)
# and a second of start-up. The sessions it yields are a small table, so the first process
# writes them to a cache file and the others read that instead. The file is named after the
# exchange-calendars version and the covered range: an upgrade (which may know new holidays) or
# a new year builds it again. A missing, unreadable or malformed file is rebuilt.


def _cache_path(last: date) -> Path | None:
    try:
        version = importlib.metadata.version("exchange-calendars")
    except importlib.metadata.PackageNotFoundError:
        return None
    home = os.environ.get("FALCON_HOME")
    if home:
        base = Path(home) / "cache"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "falcon"
    return base / f"xnys-{version}-{FIRST_DATE:%Y%m%d}-{last:%Y%m%d}.json"


def _read_cache(last: date) -> _Sessions | None:
    path = _cache_path(last)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        ordinals = [int(x) for x in data["days"]]
        opens = [datetime.fromtimestamp(int(x), UTC) for x in data["opens"]]
        closes = [datetime.fromtimestamp(int(x), UTC) for x in data["closes"]]
        early = frozenset(date.fromordinal(int(x)) for x in data["early"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not ordinals or not len(ordinals) == len(opens) == len(closes):
        return None
    if ordinals != sorted(ordinals):
        return None
    return _Sessions(days=[date.fromordinal(o) for o in ordinals], ordinals=ordinals, opens=opens,
                     closes=closes, early=early, first=FIRST_DATE, last=last)


def _write_cache(sessions: _Sessions) -> None:
    path = _cache_path(sessions.last)
    if path is None:
        return
    data = {"days": sessions.ordinals,
            "opens": [int(t.timestamp()) for t in sessions.opens],
            "closes": [int(t.timestamp()) for t in sessions.closes],
            "early": sorted(d.toordinal() for d in sessions.early)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, path)  # readers see the whole file or none
    except OSError:
        pass  # a read-only home: every process builds its own, as before


def _as_date(d: date | datetime | str) -> date:
    if isinstance(d, str):
        try:
            return date.fromisoformat(d)
        except ValueError:
            raise CalendarError(f"{d!r} is not a date (use YYYY-MM-DD)") from None
    if isinstance(d, datetime):
        return d.date()
    return d


def _checked(d: date | datetime | str) -> date:
    day = _as_date(d)
    s = _sessions()
    if not s.first <= day <= s.last:
        raise CalendarError(
            f"{day} is outside the NYSE calendar's range {s.first}..{s.last}"
        )
    return day


def _aware_utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise CalendarError(f"{ts.isoformat()} has no time zone (pass an aware UTC datetime)")
    return ts.astimezone(UTC)


def bounds() -> tuple[date, date]:
    """The first and last date the calendar answers for."""
    s = _sessions()
    return s.first, s.last


def is_trading_day(d: date | datetime | str) -> bool:
    """True when NYSE holds a session on ``d``."""
    day = _checked(d)
    s = _sessions()
    i = bisect.bisect_left(s.ordinals, day.toordinal())
    return i < len(s.ordinals) and s.ordinals[i] == day.toordinal()


def trading_days(start: date | str, end: date | str) -> list[date]:
    """Sessions from ``start`` to ``end``, both inclusive (empty when ``end < start``)."""
    first, last = _checked(start), _checked(end)
    s = _sessions()
    lo = bisect.bisect_left(s.ordinals, first.toordinal())
    hi = bisect.bisect_right(s.ordinals, last.toordinal())
    return s.days[lo:hi]


def holidays(start: date | str, end: date | str) -> list[date]:
    """Weekdays from ``start`` to ``end`` (inclusive) on which NYSE is closed."""
    first, last = _checked(start), _checked(end)
    sessions = set(trading_days(first, last))
    out = []
    day = first
    while day <= last:
        if day.weekday() < 5 and day not in sessions:
            out.append(day)
        day += timedelta(days=1)
    return out


def _index(d: date | datetime | str) -> int:
    day = _checked(d)
    s = _sessions()
    i = bisect.bisect_left(s.ordinals, day.toordinal())
    if i >= len(s.ordinals) or s.ordinals[i] != day.toordinal():
        raise CalendarError(f"{day} is not an NYSE trading day")
    return i


def session_open_close(d: date | datetime | str) -> tuple[datetime, datetime]:
    """The session's open and close as aware UTC datetimes (early closes included)."""
    i = _index(d)
    s = _sessions()
    return s.opens[i], s.closes[i]


def is_early_close(d: date | datetime | str) -> bool:
    """True when ``d`` is a session that closes early (13:00 New York)."""
    day = _checked(d)
    return day in _sessions().early


def previous_trading_day(d: date | datetime | str) -> date:
    """The last session strictly before ``d``."""
    day = _checked(d)
    s = _sessions()
    i = bisect.bisect_left(s.ordinals, day.toordinal())
    if i == 0:
        raise CalendarError(f"no NYSE session before {day} in the calendar")
    return s.days[i - 1]


def next_trading_day(d: date | datetime | str) -> date:
    """The first session strictly after ``d``."""
    day = _checked(d)
    s = _sessions()
    i = bisect.bisect_right(s.ordinals, day.toordinal())
    if i >= len(s.days):
        raise CalendarError(f"no NYSE session after {day} in the calendar")
    return s.days[i]


def session_date(ts_utc: datetime) -> date:
    """The New York calendar date of an instant (not necessarily a session)."""
    return _aware_utc(ts_utc).astimezone(NEW_YORK).date()


def last_completed_session(now_utc: datetime | None = None) -> date:
    """The most recent session whose close is at or before ``now_utc`` (default: now)."""
    now = _aware_utc(now_utc) if now_utc is not None else datetime.now(UTC)
    s = _sessions()
    day = _checked(now.astimezone(NEW_YORK).date())
    i = bisect.bisect_right(s.ordinals, day.toordinal()) - 1
    while i >= 0 and s.closes[i] > now:
        i -= 1
    if i < 0:
        raise CalendarError(f"no NYSE session completed before {now.isoformat()}")
    return s.days[i]


def is_open(ts_utc: datetime) -> bool:
    """True when the regular session is open at ``ts_utc`` (open inclusive, close exclusive)."""
    ts = _aware_utc(ts_utc)
    day = ts.astimezone(NEW_YORK).date()
    if not is_trading_day(day):
        return False
    open_, close = session_open_close(day)
    return open_ <= ts < close


def next_open(ts_utc: datetime) -> datetime:
    """The first session open strictly after ``ts_utc``."""
    ts = _aware_utc(ts_utc)
    s = _sessions()
    day = _checked(ts.astimezone(NEW_YORK).date())
    i = bisect.bisect_left(s.ordinals, day.toordinal())
    while i < len(s.opens) and s.opens[i] <= ts:
        i += 1
    if i >= len(s.opens):
        raise CalendarError(f"no NYSE session after {ts.isoformat()} in the calendar")
    return s.opens[i]
