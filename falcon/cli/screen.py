"""``falcon screen``: run screens, list profiles, show stored runs."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json, echo_table


@click.group("screen")
def cli() -> None:
    """Screen the market with profiles and look at the picks.

    \b
    Examples:
      falcon screen run --all
      falcon screen run --profile momentum_breakout --date 2024-05-01 --json
      falcon screen show 12
    """


def _reasons(reasons: list[Any]) -> str:
    return "; ".join(str(r) for r in reasons)


@cli.command("run")
@click.option("--profile", "names", multiple=True, metavar="NAME",
              help="Profile to run (repeat for several).")
@click.option("--all", "run_all", is_flag=True, help="Run every profile.")
@click.option("--date", "as_of", type=click.DateTime(["%Y-%m-%d"]),
              help="Session to screen (default: the last completed session).")
@click.option("--llm/--no-llm", "use_llm", default=None,
              help="Force LLM re-ranking on or off (default: as each profile says).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def run_cmd(names: tuple[str, ...], run_all: bool, as_of: datetime | None, use_llm: bool | None,
            as_json: bool) -> None:
    """Screen every ticker in the store, rank, store the run and print the picks.

    \b
    Examples:
      falcon screen run --all
      falcon screen run --profile oversold_bounce --profile gap_and_go --date 2024-05-01
      falcon screen run --profile momentum_breakout --llm --json
    """
    from falcon.screener.engine import run_screens
    from falcon.screener.profiles import load_profiles, select_profiles

    if bool(names) == run_all:
        raise click.UsageError("give --profile NAME (one or more) or --all")
    ctx = app()
    ctx.ready_engine()
    available = load_profiles(ctx.settings)
    profiles = list(available.values()) if run_all else select_profiles(available, names)
    day: date | None = as_of.date() if as_of else None
    results = run_screens(ctx.settings, ctx.sessions, profiles, as_of=day, use_llm=use_llm)
    if as_json:
        echo_json([r.as_dict() for r in results])
        return
    for r in results:
        note = f" ({r.ranking_note})" if r.ranking_note else ""
        title = (f"{r.profile.name} {r.as_of}: run {r.run_id}, {len(r.picks)} picks of "
                 f"{r.candidates} candidates in a universe of {r.universe_size}, "
                 f"ranked by {r.ranking}{note}")
        echo_table(title, ["#", "ticker", "score", "close", "entry", "stop", "target", "why"], [
            (p.rank, p.ticker, f"{p.score:.3f}", p.close,
             f"{p.entry_low}-{p.entry_high}" if p.entry_low is not None else "",
             p.stop, p.target, _reasons(p.reasons))
            for p in r.picks
        ])


@cli.command("profiles")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the full profiles).")
def profiles_cmd(as_json: bool) -> None:
    """List the profiles: built-in, /etc/falcon/profiles and $FALCON_HOME/profiles.

    \b
    Example:
      falcon screen profiles --json
    """
    from falcon.screener.profiles import load_profiles

    profiles = load_profiles(app().settings)
    if as_json:
        echo_json([{**p.to_dict(), "source": p.source} for p in profiles.values()])
        return
    echo_table("profiles", ["name", "conditions", "factors", "top", "schedule", "llm",
                            "description"], [
        (p.name, len(p.conditions), len(p.factors), p.top_n, " ".join(p.schedule),
         "yes" if p.llm.enabled else "no", p.description)
        for p in profiles.values()
    ])


@cli.command("check")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_cmd(paths: tuple[Path, ...]) -> None:
    """Validate profile files without running them (every problem, with file and key).

    \b
    Example:
      falcon screen check ~/.local/share/falcon/profiles/my_breakout.yaml
    """
    from falcon.errors import ValidationError
    from falcon.screener.profiles import load_profile

    failed = False
    for path in paths:
        try:
            profile = load_profile(path)
        except ValidationError as exc:
            failed = True
            for problem in exc.problems or [str(exc)]:
                click.echo(problem, err=True)
            continue
        click.echo(f"{path}: ok ({profile.name}, {len(profile.conditions)} conditions, "
                   f"warm-up {profile.warmup_bars} sessions)")
    if failed:
        raise SystemExit(65)


@cli.command("show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(run_id: int, as_json: bool) -> None:
    """Show a stored screen run and its picks.

    \b
    Example:
      falcon screen show 12 --json
    """
    from falcon.screener.engine import load_run

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as s:
        run = load_run(s, run_id)
        doc = {
            "run_id": run.id, "profile": run.profile, "as_of": run.as_of, "status": run.status,
            "universe_size": run.universe_size, "candidates": run.candidates,
            "ranking": run.ranking, "ranking_note": run.ranking_note, "error": run.error,
            "started_at": run.started_at, "finished_at": run.finished_at,
            "picks": [
                {"rank": p.rank, "ticker": p.ticker, "score": p.score, "close": p.close,
                 "entry_low": p.entry_low, "entry_high": p.entry_high, "stop": p.stop,
                 "target": p.target, "fresh_until": p.fresh_until, "factors": p.factors,
                 "reasons": p.reasons, "llm": p.llm}
                for p in run.picks
            ],
        }
    if as_json:
        echo_json(doc)
        return
    picks: list[dict[str, Any]] = doc["picks"]  # type: ignore[assignment]
    extra = f", error: {doc['error']}" if doc["error"] else ""
    note = f" ({doc['ranking_note']})" if doc["ranking_note"] else ""
    echo_table(
        f"run {run_id}: {doc['profile']} {doc['as_of']} [{doc['status']}{extra}], "
        f"ranked by {doc['ranking']}{note}",
        ["#", "ticker", "score", "close", "entry", "stop", "target", "why"],
        [(p["rank"], p["ticker"], f"{p['score']:.3f}", p["close"],
          f"{p['entry_low']}-{p['entry_high']}" if p["entry_low"] is not None else "",
          p["stop"], p["target"], _reasons(p["reasons"])) for p in picks],
    )


@cli.command("runs")
@click.option("--profile", help="Only this profile's runs.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_cmd(profile: str | None, limit: int, as_json: bool) -> None:
    """List recent screen runs, newest first.

    \b
    Example:
      falcon screen runs --profile gap_and_go --limit 5
    """
    from sqlalchemy import func, select

    from falcon.db.models import ScreenPick, ScreenRun

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as s:
        picks = (select(ScreenPick.run_id, func.count().label("n"))
                 .group_by(ScreenPick.run_id).subquery())
        query = (select(ScreenRun, func.coalesce(picks.c.n, 0))
                 .outerjoin(picks, picks.c.run_id == ScreenRun.id)
                 .order_by(ScreenRun.id.desc()).limit(limit))
        if profile:
            query = query.where(ScreenRun.profile == profile)
        rows = [{"run_id": r.id, "profile": r.profile, "as_of": r.as_of, "status": r.status,
                 "picks": int(n), "candidates": r.candidates, "ranking": r.ranking,
                 "started_at": r.started_at} for r, n in s.execute(query)]
    if as_json:
        echo_json(rows)
        return
    echo_table("screen runs", ["run", "profile", "as of", "status", "picks", "candidates",
                               "ranking"],
               [(r["run_id"], r["profile"], r["as_of"], r["status"], r["picks"],
                 r["candidates"], r["ranking"]) for r in rows])
