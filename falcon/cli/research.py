"""``falcon research``: strategies from YouTube videos, and their lifecycle."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json, echo_table

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _safe(value: Any, limit: int = 200) -> str:
    """Untrusted text (titles, LLM summaries) made safe for a terminal: no escape sequences,
    no rich markup, bounded length."""
    from rich.markup import escape

    text = _CONTROL.sub(" ", "" if value is None else str(value))
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return escape(text)


def _plain(value: Any, limit: int = 2000) -> str:
    text = _CONTROL.sub(" ", "" if value is None else str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse_date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _parse_basket(_ctx: click.Context, _param: click.Parameter,
                  value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    tickers = tuple(t.strip().upper() for t in value.split(",") if t.strip())
    bad = [t for t in tickers if not re.fullmatch(r"[A-Z][A-Z0-9.\-]{0,9}", t)]
    if bad:
        raise click.BadParameter(f"not a ticker: {bad[0]!r}")
    return tickers


def _basket_options(func: Any) -> Any:
    func = click.option("--end", callback=_parse_date, help="Last day of the backtest.")(func)
    func = click.option("--start", callback=_parse_date, help="First day of the backtest.")(func)
    return click.option("--basket", callback=_parse_basket, metavar="T1,T2,...",
                        help="Tickers to backtest on (default: the sample universe).")(func)


@click.group("research")
def cli() -> None:
    """Strategies extracted from YouTube videos by the LLM, backtested, promoted, retired.

    A researched strategy goes extracted -> backtested -> paper -> retired, with a reason at
    every step (the audit log keeps them). Transcripts and LLM answers are data: nothing in them
    is ever run or fetched.

    \b
    Examples:
      falcon research youtube https://www.youtube.com/watch?v=VIDEO_ID
      falcon research list --status backtested
      falcon research promote 12 --reason "clean look-ahead, Sharpe 1.2"
    """


@cli.command("youtube")
@click.argument("url", required=False)
@click.option("--info-json", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Use a yt-dlp info JSON (yt-dlp --write-info-json --skip-download URL) "
                   "instead of fetching URL's metadata: works offline, captions are still "
                   "fetched from the URLs it lists.")
@click.option("--lang", default="en", show_default=True, help="Caption language.")
@click.option("--no-backtest", is_flag=True, help="Only extract; do not backtest.")
@_basket_options
@click.option("--queue", "queued", is_flag=True,
              help="Submit a research job for a worker instead of running it here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def youtube_cmd(url: str | None, info_json: Path | None, lang: str, no_backtest: bool,
                basket: tuple[str, ...] | None, start: date | None, end: date | None,
                queued: bool, as_json: bool) -> None:
    """Extract a strategy from a video's captions, backtest it and store it.

    Manual captions are preferred over automatic ones; the LLM's spec is validated (one repair
    round), then backtested on the basket and checked for look-ahead.

    \b
    Examples:
      falcon research youtube https://youtu.be/VIDEO_ID --lang en
      falcon research youtube --info-json video.info.json --no-backtest --json
      falcon research youtube https://youtu.be/VIDEO_ID --basket AAPL,MSFT --start 2018-01-01
    """
    if (url is None) == (info_json is None):
        raise click.UsageError("give a YouTube URL or --info-json FILE (one of them)")
    ctx = app()
    ctx.ready_engine()
    if queued:
        from falcon.jobs.queue import submit
        from falcon.research.jobs import payload_options

        payload: dict[str, Any] = {
            "url": url, "info_json": str(info_json.resolve()) if info_json else None,
            "lang": lang, "backtest": not no_backtest,
            "basket": list(basket) if basket else None,
            "start": start.isoformat() if start else None,
            "end": end.isoformat() if end else None, "actor": "cli",
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        payload_options(payload)  # refuse a bad payload here, not later in a worker
        with ctx.sessions.begin() as session:
            job_id = submit(session, "research", payload)
        if as_json:
            echo_json({"job_id": job_id})
        else:
            click.echo(f"queued research job {job_id} (see `falcon jobs list`)")
        return

    from falcon.research.pipeline import ResearchOptions, research_video

    options = ResearchOptions(lang=lang, backtest=not no_backtest, basket=basket, start=start,
                              end=end, actor="cli")

    def progress(fraction: float, note: str) -> None:
        if ctx.show_progress:
            click.echo(f"{fraction:4.0%} {note}", err=True)

    result = research_video(ctx.settings, ctx.sessions, url=url, info_json=info_json,
                            options=options, progress=progress)
    if as_json:
        echo_json(result.as_dict())
        return
    e = result.extraction
    click.echo(f"strategy {result.strategy_id} ({result.name}): {result.status}")
    click.echo(f"  {_plain(result.status_reason)}")
    click.echo(f"  summary: {_plain(e.summary, 600)}")
    click.echo(f"  confidence {e.confidence:.2f}; {len(e.calls)} LLM call(s), "
               f"{e.prompt_tokens}+{e.completion_tokens} tokens, ${e.cost_usd:.4f}")
    for rule in e.rules[:20]:
        mark = "" if rule.get("quote_found") else " (quote not found in the transcript)"
        click.echo(f"  [{_plain(rule.get('timestamp'), 10)}] {_plain(rule.get('rule'), 200)}"
                   f" — \"{_plain(rule.get('quote'), 200)}\"{mark}")
    for item in e.ambiguities[:20]:
        click.echo(f"  ambiguous: {_plain(item, 300)}")
    if result.evaluation_error:
        click.echo(f"  {_plain(result.evaluation_error, 500)}")


def _row(strategy: Any) -> dict[str, Any]:
    prov = strategy.provenance or {}
    video = prov.get("video") or {}
    extraction = prov.get("extraction") or {}
    evaluation = prov.get("evaluation") or {}
    return {
        "id": strategy.id, "name": strategy.name, "status": strategy.status,
        "status_reason": strategy.status_reason, "video_id": video.get("video_id"),
        "title": video.get("title"), "channel": video.get("channel"),
        "confidence": extraction.get("confidence"),
        "lookahead_clean": (evaluation.get("lookahead") or {}).get("clean"),
        "created_at": strategy.created_at, "updated_at": strategy.updated_at,
    }


@cli.command("list")
@click.option("--status", type=click.Choice(["failed", "extracted", "backtested", "paper",
                                             "retired"]), help="Only this status.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(status: str | None, as_json: bool) -> None:
    """List researched strategies, newest first.

    \b
    Example:
      falcon research list --status backtested --json
    """
    from falcon.research.lifecycle import list_research

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as session:
        rows = [_row(s) for s in list_research(session, status)]
    if as_json:
        echo_json(rows)
        return
    echo_table("researched strategies", ["id", "name", "status", "confidence", "look-ahead",
                                         "title"],
               [(r["id"], _safe(r["name"]), r["status"],
                 "" if r["confidence"] is None else f"{r['confidence']:.2f}",
                 {True: "clean", False: "NOT clean"}.get(r["lookahead_clean"], ""),
                 _safe(r["title"], 60)) for r in rows])


@cli.command("show")
@click.argument("strategy_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(strategy_id: int, as_json: bool) -> None:
    """Show a researched strategy: spec, provenance, backtest and history.

    \b
    Example:
      falcon research show 12 --json
    """
    from falcon.research.lifecycle import get_research

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as session:
        s = get_research(session, strategy_id)
        data = {**_row(s), "source": s.source, "spec": s.spec, "provenance": s.provenance}
    if as_json:
        echo_json(data)
        return
    prov = data["provenance"] or {}
    click.echo(f"strategy {data['id']} ({_plain(data['name'])}): {data['status']}")
    click.echo(f"  {_plain(data['status_reason'], 1000)}")
    click.echo(f"  video: {_plain(data['title'])} — {_plain(data['channel'])} "
               f"({_plain((prov.get('video') or {}).get('url'))})")
    click.echo(f"  model {_plain(prov.get('model'))}, prompt {_plain(prov.get('prompt_version'))}, "
               f"{prov.get('prompt_tokens', 0)}+{prov.get('completion_tokens', 0)} tokens, "
               f"${float(prov.get('cost_usd') or 0):.4f}")
    for step in prov.get("history", []):
        click.echo(f"  {_plain(step.get('ts'))} {step.get('from')} -> {step.get('to')} "
                   f"by {_plain(step.get('actor'))}: {_plain(step.get('reason'), 300)}")
    click.echo("  spec (use --json for everything):")
    from falcon.cli.output import to_json

    for line in to_json(data["spec"]).splitlines()[:80]:
        click.echo("    " + _plain(line, 300))


def _step(action: str, strategy_id: int, reason: str, as_json: bool) -> None:
    from falcon.research import lifecycle

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions.begin() as session:
        move = lifecycle.promote if action == "promote" else lifecycle.retire
        strategy = move(session, strategy_id, reason=reason, actor="cli")
        data = _row(strategy)
    if as_json:
        echo_json(data)
    else:
        click.echo(f"strategy {strategy_id}: {data['status']} ({_plain(reason, 300)})")


@cli.command("promote")
@click.argument("strategy_id", type=int)
@click.option("--reason", required=True, help="Why it should be paper-traded (recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def promote_cmd(strategy_id: int, reason: str, as_json: bool) -> None:
    """Promote a backtested, look-ahead-clean strategy to paper trading.

    \b
    Example:
      falcon research promote 12 --reason "Sharpe 1.3 on 20 tickers, clean look-ahead"
    """
    _step("promote", strategy_id, reason, as_json)


@cli.command("retire")
@click.argument("strategy_id", type=int)
@click.option("--reason", required=True, help="Why it is retired (recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def retire_cmd(strategy_id: int, reason: str, as_json: bool) -> None:
    """Retire a researched strategy (it stays listed, with its history).

    \b
    Example:
      falcon research retire 12 --reason "drawdown beyond 20% in paper trading"
    """
    _step("retire", strategy_id, reason, as_json)


@cli.command("backtest")
@click.argument("strategy_id", type=int)
@_basket_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def backtest_cmd(strategy_id: int, basket: tuple[str, ...] | None, start: date | None,
                 end: date | None, as_json: bool) -> None:
    """Backtest a researched strategy again (e.g. after --no-backtest) with the look-ahead check.

    \b
    Example:
      falcon research backtest 12 --basket AAPL,MSFT,NVDA --start 2019-01-01
    """
    from falcon.errors import FalconError
    from falcon.research.pipeline import backtest_strategy

    ctx = app()
    ctx.ready_engine()
    evaluation, error = backtest_strategy(ctx.settings, ctx.sessions, strategy_id, basket=basket,
                                          start=start, end=end, actor="cli")
    if evaluation is None:
        raise FalconError(error or "backtest failed")
    if as_json:
        echo_json({"strategy_id": strategy_id, **evaluation.as_dict()})
        return
    click.echo(f"strategy {strategy_id}: backtested on {len(evaluation.tickers)} tickers "
               f"{evaluation.start}..{evaluation.end}, {len(evaluation.trades)} trades, "
               f"look-ahead {'clean' if evaluation.clean else 'NOT clean'}")
    for key, value in sorted(evaluation.metrics.items()):
        if isinstance(value, int | float | str | datetime):
            click.echo(f"  {key}: {value}")
