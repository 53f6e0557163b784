"""``falcon db``: migrations."""

from __future__ import annotations

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json


@click.group("db")
def cli() -> None:
    """Database migrations.

    \b
    Examples:
      falcon db upgrade
      falcon db current --json
    """


@cli.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def upgrade_cmd(revision: str) -> None:
    """Apply migrations up to REVISION (run once per deploy, not by every service).

    \b
    Example:
      FALCON_DATABASE_URL=postgresql://falcon@db/falcon falcon db upgrade
    """
    from falcon.db.engine import check_reachable, safe_url
    from falcon.db.migrate import current_revision, upgrade

    ctx = app()
    check_reachable(ctx.engine)
    before = current_revision(ctx.engine)
    upgrade(ctx.engine, revision)
    after = current_revision(ctx.engine)
    where = safe_url(ctx.settings.effective_database_url)
    if before == after:
        click.echo(f"{where}: already at {after}")
    else:
        click.echo(f"{where}: upgraded {before or 'empty'} -> {after}")


@cli.command("current")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def current_cmd(as_json: bool) -> None:
    """Show the database's migration revision and the newest one shipped.

    \b
    Example:
      falcon db current
    """
    from falcon.db.engine import check_reachable
    from falcon.db.migrate import current_revision, head_revision

    ctx = app()
    check_reachable(ctx.engine)
    current, head = current_revision(ctx.engine), head_revision(ctx.engine)
    if as_json:
        echo_json({"current": current, "head": head, "up_to_date": current == head})
    else:
        state = "up to date" if current == head else "needs `falcon db upgrade`"
        click.echo(f"current {current or 'none'}, head {head} ({state})")
