"""The front page: accounts, their equity chart, the latest screen, fills and events (live)."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, render_template, request
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from falcon.db.models import BacktestRun, Fill, PaperAccount, ScreenPick, ScreenRun
from falcon.web import app_settings, charts
from falcon.web.actions import MAX_ID
from falcon.web.equity import data_version, equity_history, history_key, memo
from falcon.web.extensions import db
from falcon.web.queries import account_summaries, recent_events

bp = Blueprint("overview", __name__)


def _account(s: Session) -> PaperAccount | None:
    """``?account=<id>``, else the account that traded last."""
    wanted = request.args.get("account", type=int)
    if wanted is None or not 1 <= wanted <= MAX_ID:
        wanted = s.scalar(select(Fill.account_id).order_by(Fill.id.desc()).limit(1))
    return s.get(PaperAccount, wanted) if wanted is not None else None


Chart = tuple[dict[str, Any], Markup]


def _with_json(chart: dict[str, Any]) -> Chart:
    # Serialised once and cached with the chart: thousands of points cost more to encode than
    # the rest of the page costs to render.
    return chart, htmlsafe_json_dumps(chart)


def _paper_chart(s: Session, account: PaperAccount, benchmark: str | None) -> Chart | None:
    history = equity_history(s, app_settings(), account, benchmark)
    if not history.points:
        return None
    series = [charts.line(f"Account {account.name}", history.points, intraday=False,
                          color=charts.PALETTE[0], precision=0)]
    held = charts.buy_and_hold(history.benchmark_closes, float(account.starting_cash),
                               history.points[0][0])
    if held:
        series.append(charts.line(f"Buy & hold {benchmark}", held, intraday=False,
                                  color=charts.PALETTE[1], precision=0))
    return _with_json({
        "source": "paper",
        "account_id": account.id,
        "title": f"Paper account {account.name}: equity"
        + (f" against buy-and-hold of {benchmark}" if held else ""),
        "note": f"Rebuilt from {history.fills} fills, positions marked at each day's close; "
        "the benchmark starts with the same cash on the first fill's day.",
        "series": series,
    })


def _backtest_chart(s: Session, run: BacktestRun, benchmark: str | None) -> Chart | None:
    chart, _ = charts.backtest_equity(s, app_settings(), run, benchmark)
    if not chart["series"][0]["data"]:
        return None
    return _with_json(chart | {
        "source": "backtest",
        "run_id": run.id,
        "title": f"No paper trading history yet: backtest #{run.id} ({run.strategy_name})"
        + (f" against buy-and-hold of {benchmark}" if len(chart["series"]) > 1 else ""),
    })


def equity_chart(s: Session) -> Chart:
    """The paper account's equity against buy-and-hold of the benchmark, and its JSON.

    With no fills yet there is no paper history to draw, so the latest finished backtest stands
    in, and the chart's title says so. Both are cached (see :func:`falcon.web.equity.memo`).
    """
    settings = app_settings()
    version = data_version(s)
    benchmark = charts.benchmark_ticker(settings, version)
    account = _account(s)
    if account is not None:
        key = ("overview-paper", *history_key(s, settings, account, benchmark))
        paper = memo(key, lambda: _paper_chart(s, account, benchmark))
        if paper is not None:
            return paper
    run = s.scalar(
        select(BacktestRun).where(BacktestRun.status == "done").order_by(BacktestRun.id.desc())
        .limit(1)
    )
    if run is not None:
        key = ("overview-backtest", settings.effective_database_url, run.id, run.created_at,
               version, benchmark)
        backtest = memo(key, lambda: _backtest_chart(s, run, benchmark))
        if backtest is not None:
            return backtest
    return _with_json({"source": None, "note": None, "series": [],
                       "title": "No equity history yet: no fills and no finished backtest."})


# Plain SQL written once: this runs on every view of the front page, and building and compiling
# the equivalent ORM selects cost more than the queries themselves. One statement, so one round
# trip to the database node: the newest ids etc. (one row) joined to every account's row (the
# LEFT JOIN still gives the one row when there are no accounts). Portable to both databases.
_VERSION = text("""
SELECT v.*, a.id, a.name, a.cash, a.starting_cash, a.halted, a.halt_reason, a.created_at
FROM (SELECT (SELECT max(id) FROM fills) AS fill_id,
             (SELECT max(id) FROM events) AS event_id,
             (SELECT max(id) FROM screen_runs) AS screen_run_id,
             (SELECT max(id) FROM screen_picks) AS screen_pick_id,
             (SELECT max(id) FROM data_imports) AS data_import_id,
             (SELECT status FROM screen_runs ORDER BY id DESC LIMIT 1) AS screen_status,
             (SELECT max(id) FROM backtest_runs WHERE status = 'done') AS backtest_id,
             (SELECT count(*) FROM positions WHERE qty <> 0) AS positions,
             (SELECT sum(qty * avg_cost) FROM positions) AS position_cost) AS v
LEFT JOIN paper_accounts AS a ON 1 = 1
ORDER BY a.id
""")
_NEWEST_COLUMNS = 9


def page_version(s: Session) -> tuple[object, ...]:
    """Everything the overview's content shows can change only if this changes (one query).

    The newest ids of fills, events, screen runs and picks, data imports and finished backtests
    (rows that are only ever added), the newest screen run's status, the positions' count and
    cost, and every account's row (cash, halt state and reason). Account rows are few, so they are
    compared whole rather than trusted to come with an event.
    """
    rows = s.connection().execute(_VERSION).all()
    newest = tuple(rows[0][:_NEWEST_COLUMNS])
    accounts = tuple(tuple(r[_NEWEST_COLUMNS:]) for r in rows if r[_NEWEST_COLUMNS] is not None)
    return (*newest, *accounts)


def _content(s: Session) -> Markup:
    chart, chart_json = equity_chart(s)
    latest = s.scalar(select(ScreenRun).order_by(ScreenRun.id.desc()).limit(1))
    picks = []
    if latest is not None:
        picks = list(
            s.scalars(
                select(ScreenPick)
                .where(ScreenPick.run_id == latest.id)
                .order_by(ScreenPick.rank)
                .limit(10)
            )
        )
    return Markup(render_template(  # noqa: S704 - autoescaped template output
        "overview/_content.html",
        accounts=account_summaries(s),
        equity_chart=chart,
        equity_json=chart_json,
        latest_run=latest,
        picks=picks,
        fills=s.scalars(select(Fill).order_by(Fill.id.desc()).limit(20)).all(),
        events=recent_events(s, 20),
    ))


@bp.route("/")
def index() -> str:
    """Overview of accounts, the equity chart, the latest screen run, fills and events.

    The content is the same for every user, so it is rendered once per worker and reused until
    :func:`page_version` changes (a new fill, event, screen, import, halt ...: at once, never
    stale); only the frame around it (username, CSRF token, flashes) is rendered per request.
    """
    s = db.session
    settings = app_settings()
    wanted = request.args.get("account", type=int)
    key = ("overview-page", settings.effective_database_url, str(settings.home), wanted,
           date.today(), *page_version(s))
    return render_template("overview/index.html", content=memo(key, lambda: _content(s)))
