"""``falcon doctor``: is this install healthy?"""

from __future__ import annotations

from typing import Any

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json
from falcon.errors import FalconError


def _check(name: str, fn: Any) -> dict[str, Any]:
    try:
        detail = fn()
        return {"check": name, "ok": True, "detail": detail}
    except FalconError as exc:
        return {"check": name, "ok": False, "detail": str(exc)}


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cli(as_json: bool) -> None:
    """Check the config, the database (reachable, migrated) and the market-data store.

    Exits non-zero when any check fails.

    \b
    Examples:
      falcon doctor
      falcon doctor --json | jq '.checks[] | select(.ok == false)'
    """
    ctx = app()
    results: list[dict[str, Any]] = []

    def config() -> str:
        s = ctx.settings
        return f"home {s.home}, config file {s.source_file or 'none'}"

    results.append(_check("config", config))
    if results[-1]["ok"]:
        from falcon.db.engine import check_reachable, safe_url
        from falcon.db.migrate import current_revision, head_revision

        def database() -> str:
            check_reachable(ctx.engine)
            return safe_url(ctx.settings.effective_database_url)

        def migrations() -> str:
            current, head = current_revision(ctx.engine), head_revision(ctx.engine)
            if current != head:
                raise FalconError(
                    f"at {current or 'none'}, head is {head}: run `falcon db upgrade`"
                )
            return f"at head {head}"

        results.append(_check("database", database))
        if results[-1]["ok"]:
            results.append(_check("migrations", migrations))
        from falcon.data.health import data_checks

        results.extend(_check(name, fn) for name, fn in data_checks(ctx.settings, ctx.engine))

    ok = all(r["ok"] for r in results)
    if as_json:
        echo_json({"ok": ok, "checks": results})
    else:
        for r in results:
            mark = click.style("ok  ", fg="green") if r["ok"] else click.style("FAIL", fg="red")
            click.echo(f"{mark} {r['check']:<12} {r['detail']}")
    if not ok:
        raise SystemExit(1)
