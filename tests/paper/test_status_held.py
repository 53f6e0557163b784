"""``falcon paper status`` shows the entries the trader holds in memory only (quiet_state).

The scene is test_quiet_retries.py's: strategy ``hog`` puts all the cash into A and keeps it
(its entry signal holds, so it also holds an entry if flat for A); strategy ``stuck`` signals an
entry into B at every bar, refused for want of cash at every open. Neither has an order row
while held: without these rows the account would show no open orders at all.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon.cli import main
from falcon.db.engine import transaction
from falcon.db.models import PaperAccount
from falcon.domain.market import Bar
from falcon.paper.admin import HELD_ENTRIES_HELP, account_status
from falcon.paper.decisions import DecisionLog, client_order_id
from falcon.paper.trader import Trader

from .helpers import LOOSE, bar, days, make_account, slot

D = days(date(2024, 1, 2), 8)
WIDE = {"COLUMNS": "240"}  # rich wraps table cells to the terminal's width


def _trader(sessions: sessionmaker[Session], name: str) -> Trader:
    slots = [
        slot("hog", ["A"], entry="close > 0", exit_="close < 0",
             sizing={"kind": "fraction", "value": 1.0}),
        slot("stuck", ["B"], entry="close > 50", exit_="close < 0",
             sizing={"kind": "fraction", "value": 0.5}),
    ]
    return Trader(sessions, account=name, slots=slots, kind="day", limits=LOOSE,
                  log_sink=DecisionLog(None))


def _day(i: int) -> list[Bar]:
    return [bar("A", D[i], 100.0), bar("B", D[i], 100.0)]


def _status(sessions: sessionmaker[Session], name: str) -> dict[str, Any]:
    with sessions() as s:
        return account_status(s, name, LOOSE)


def _cli(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(main, ["paper", "status", "--account", "main", *args], env=WIDE)
    assert result.exit_code == 0, result.output
    return result.output


def _row(text: str, *cells: str) -> list[str]:
    """The cells of the one row of the held entries' table in ``text`` that has ``cells``."""
    section = text.split("Held entries (quiet retries)", 1)[1]
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in section.splitlines()
            if "│" in line]
    found = [r for r in rows if all(c in r for c in cells)]
    assert len(found) == 1, text
    return found[0]


# A stored streak as Streaks.dump writes it (a refusal counted twice, nothing waiting).
STREAK = ["stuck", "B", "buy", "insufficient_cash", "main:stuck:B:20240102T0500:entry",
          "2024-01-03T05:00:00+00:00", "2024-01-04T05:00:00+00:00", 2, None, None]


@pytest.fixture
def cli_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``falcon`` command on the test's database (SQLite, then PostgreSQL)."""
    monkeypatch.setenv("FALCON_DATABASE_URL", db_url)


def test_a_refusal_streak_is_shown_with_its_cause_and_count(
    sessions: sessionmaker[Session], runner: CliRunner, cli_db: None,
) -> None:
    make_account(sessions, "main")
    trader = _trader(sessions, "main")
    for i in range(5):  # B signals on D0..D4; refused at the opens of D1..D4
        trader.process(_day(i))

    status = _status(sessions, "main")
    assert status["open_orders"] == []  # what the user saw before: nothing going on
    assert status["held_entries_warning"] is None
    retry = {
        "kind": "quiet_retry", "strategy": "stuck", "ticker": "B", "side": "buy",
        "cause": "insufficient_cash", "count": 4,
        "first_ts": D[1].isoformat(), "last_ts": D[4].isoformat(),
        "first_client_order_id": client_order_id("main", "stuck", "B", D[0], "entry"),
        "waiting": True,
        "client_order_id": client_order_id("main", "stuck", "B", D[4], "entry"),
    }
    if_flat = {
        "kind": "if_flat", "strategy": "hog", "ticker": "A", "side": "buy", "cause": None,
        "count": None, "first_ts": None, "last_ts": None, "first_client_order_id": None,
        "waiting": True, "client_order_id": client_order_id("main", "hog", "A", D[4], "entry"),
    }
    assert status["held_entries"] == [retry, if_flat]

    trader.process(_day(5))  # one more refusal: counted, the streak's first refusal unchanged
    retry |= {"count": 5, "last_ts": D[5].isoformat(),
              "client_order_id": client_order_id("main", "stuck", "B", D[5], "entry")}
    if_flat["client_order_id"] = client_order_id("main", "hog", "A", D[5], "entry")
    assert _status(sessions, "main")["held_entries"] == [retry, if_flat]

    report = json.loads(_cli(runner, "--json"))
    assert report["held_entries"] == [retry, if_flat]
    assert report["held_entries_warning"] is None

    text = _cli(runner)
    assert "Held entries (quiet retries)" in text
    assert " ".join(HELD_ENTRIES_HELP.split()[:8]) in text
    assert _row(text, "stuck") == ["stuck", "B", "buy", "insufficient_cash", "5",
                                   "2024-01-03 00:00", "2024-01-09 00:00", "retry"]
    assert _row(text, "hog") == ["hog", "A", "buy", "position open", "", "", "", "if flat"]
    assert "warning" not in text


def test_an_entry_if_flat_alone_is_shown(
    sessions: sessionmaker[Session], runner: CliRunner, cli_db: None,
) -> None:
    """A strategy holding its position while its entry signal holds: one entry if flat, waiting
    for the next open, and no refusal streak."""
    make_account(sessions, "main")
    trader = Trader(sessions, account="main", kind="day", limits=LOOSE,
                    slots=[slot("hold", ["A"], entry="close > 0", exit_="close < 0")],
                    log_sink=DecisionLog(None))
    for i in range(3):  # entered at D1's open; the signal holds on D1 and D2
        trader.process([bar("A", D[i], 100.0)])

    cid = client_order_id("main", "hold", "A", D[2], "entry")
    held = _status(sessions, "main")["held_entries"]
    assert [(h["kind"], h["strategy"], h["ticker"], h["side"], h["client_order_id"])
            for h in held] == [("if_flat", "hold", "A", "buy", cid)]
    assert json.loads(_cli(runner, "--json"))["held_entries"] == held
    text = _cli(runner)
    assert "Held entries (quiet retries)" in text
    assert _row(text, "hold") == ["hold", "A", "buy", "position open", "", "", "", "if flat"]


def test_nothing_held_shows_an_empty_list_and_no_section(
    sessions: sessionmaker[Session], runner: CliRunner, cli_db: None,
) -> None:
    make_account(sessions, "main")
    for state in (None, {}, {"v": 1, "streaks": []}):
        _set_quiet_state(sessions, "main", {"v": 1, "streaks": [STREAK]})  # one held, shown:
        assert [h["cause"] for h in _status(sessions, "main")["held_entries"]] == [
            "insufficient_cash"]
        assert "Held entries (quiet retries)" in _cli(runner)
        _set_quiet_state(sessions, "main", state)  # then nothing held
        status = _status(sessions, "main")
        assert (status["held_entries"], status["held_entries_warning"]) == ([], None)
        assert json.loads(_cli(runner, "--json"))["held_entries"] == []
        text = _cli(runner)
        assert "trading" in text and "Held entries" not in text and "warning" not in text


def _set_quiet_state(sessions: sessionmaker[Session], name: str, state: Any) -> None:
    with transaction(sessions) as s:
        s.scalars(select(PaperAccount).where(PaperAccount.name == name)).one().quiet_state = state


@pytest.mark.parametrize(("state", "says"), [
    ({"v": 1, "streaks": [["stuck", "B"]]}, "cannot be read"),
    ({"v": 1, "streaks": [[*STREAK[:5], "not a time", *STREAK[6:]]]}, "cannot be read"),
    ({"v": 1, "streaks": [[*STREAK[:7], "many", *STREAK[8:]]]}, "cannot be read"),
    ({"v": 1, "streaks": "garbage"}, "cannot be read"),
    ({"v": 1, "streaks": [STREAK], "if_flat": [["id", "A", "buy", "not a dict"]]},
     "cannot be read"),
    ("garbage", "cannot be read"),
    ([1, 2], "cannot be read"),
    ({"v": 99, "streaks": [STREAK]}, "version 99"),
], ids=["short", "time", "count", "streaks", "if_flat", "string", "list", "version"])
def test_an_unreadable_quiet_state_shows_nothing_held_and_a_warning(
    sessions: sessionmaker[Session], runner: CliRunner, cli_db: None, state: Any, says: str,
) -> None:
    make_account(sessions, "main")
    _set_quiet_state(sessions, "main", {"v": 1, "streaks": [STREAK]})
    assert [h["count"] for h in _status(sessions, "main")["held_entries"]] == [2]  # readable
    _set_quiet_state(sessions, "main", state)

    status = _status(sessions, "main")
    assert status["held_entries"] == []
    assert says in status["held_entries_warning"]
    report = json.loads(_cli(runner, "--json"))
    assert report["held_entries"] == [] and says in report["held_entries_warning"]
    text = _cli(runner)  # the runner mixes stderr in: the warning is printed there
    assert "warning: " in text and says in text and "Held entries (quiet" not in text
