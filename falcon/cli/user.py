"""``falcon user``: dashboard logins, API tokens and second factors.

Passwords are prompted for (twice) or read from stdin, never taken from argv, where ``ps`` and
the shell history would show them.
"""

from __future__ import annotations

import sys

import click

from falcon.cli.context import app
from falcon.cli.output import echo_json, echo_table

_password_stdin = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of prompting.",
)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("no password on stdin")
        return password
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.group("user")
def cli() -> None:
    """Manage dashboard users, their API tokens and TOTP second factors.

    \b
    Examples:
      falcon user add alice --admin
      falcon user admin bob
      falcon user token alice --name grafana
      falcon user list
    """


@cli.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@_password_stdin
def add_cmd(name: str, admin: bool, password_stdin: bool) -> None:
    """Create user NAME (asks for the password twice).

    \b
    Examples:
      falcon user add alice --admin
      printf '%s\\n' "$PW" | falcon user add bob --password-stdin
    """
    from falcon.db.engine import transaction
    from falcon.web.users import create_user

    ctx = app()
    ctx.ready_engine()
    password = _read_password(password_stdin)
    with transaction(ctx.sessions) as session:
        create_user(session, name, password, is_admin=admin)
    click.echo(f"added user {name}{' (admin)' if admin else ''}")


@cli.command("passwd")
@click.argument("name")
@_password_stdin
def passwd_cmd(name: str, password_stdin: bool) -> None:
    """Set a new password for NAME; their open sessions end.

    \b
    Example:
      falcon user passwd alice
    """
    from falcon.db.engine import transaction
    from falcon.web.users import get_user, set_password

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as session:
        get_user(session, name)  # fail before prompting
    password = _read_password(password_stdin)
    with transaction(ctx.sessions) as session:
        set_password(session, name, password)
    click.echo(f"password of {name} changed")


@cli.command("admin")
@click.argument("name")
@click.option("--revoke", is_flag=True, help="Take the admin rights away instead.")
def admin_cmd(name: str, revoke: bool) -> None:
    """Make NAME an admin (or, with --revoke, no longer one).

    Only admins may halt, resume or cancel paper trading and promote or retire strategies from
    the dashboard and the API; every user can read every page and queue backtests and research.

    \b
    Examples:
      falcon user admin alice
      falcon user admin bob --revoke
    """
    from falcon.db.engine import transaction
    from falcon.web.users import set_admin

    ctx = app()
    ctx.ready_engine()
    with transaction(ctx.sessions) as session:
        set_admin(session, name, not revoke)
    click.echo(f"{name} is {'no longer ' if revoke else ''}an admin")


@cli.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove_cmd(name: str, yes: bool) -> None:
    """Remove user NAME and their API tokens.

    \b
    Example:
      falcon user remove bob --yes
    """
    from falcon.db.engine import transaction
    from falcon.web.users import delete_user, get_user

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as session:
        get_user(session, name)
    if not yes:
        click.confirm(f"Remove user {name} and their API tokens?", abort=True)
    with transaction(ctx.sessions) as session:
        delete_user(session, name)
    click.echo(f"removed user {name}")


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json: bool) -> None:
    """List users with their roles, second factor and live API tokens.

    \b
    Example:
      falcon user list --json
    """
    from sqlalchemy import select

    from falcon.db.models import ApiToken, User

    ctx = app()
    ctx.ready_engine()
    with ctx.sessions() as session:
        users = session.scalars(select(User).order_by(User.username)).all()
        tokens = session.scalars(select(ApiToken).where(ApiToken.revoked.is_(False))).all()
    names: dict[int, list[str]] = {}
    for token in tokens:
        names.setdefault(token.user_id, []).append(token.name)
    rows = [
        {
            "username": u.username,
            "admin": u.is_admin,
            "totp": bool(u.totp_secret),
            "tokens": sorted(names.get(u.id, [])),
            "last_login_at": u.last_login_at,
        }
        for u in users
    ]
    if as_json:
        echo_json(rows)
        return
    echo_table(
        None,
        ["user", "admin", "totp", "tokens", "last login (UTC)"],
        [
            (
                u.username,
                "yes" if u.is_admin else "",
                "yes" if u.totp_secret else "",
                ", ".join(sorted(names.get(u.id, []))),
                u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "",
            )
            for u in users
        ],
    )


@cli.command("token")
@click.argument("name")
@click.option("--name", "label", required=True, help="What the token is for (grafana, laptop ...).")
@click.option("--revoke", is_flag=True, help="Revoke NAME's tokens called LABEL instead.")
def token_cmd(name: str, label: str, revoke: bool) -> None:
    """Create an API token for user NAME and print it once (or --revoke it).

    Use it as `Authorization: Bearer <token>` on /api/v1. Only its SHA-256 is stored: a lost token
    cannot be shown again, revoke it and make another.

    \b
    Examples:
      falcon user token alice --name grafana
      falcon user token alice --name grafana --revoke
    """
    from falcon.db.engine import transaction
    from falcon.web.users import issue_token, revoke_tokens

    ctx = app()
    ctx.ready_engine()
    with transaction(ctx.sessions) as session:
        if revoke:
            count = revoke_tokens(session, name, label)
        else:
            token = issue_token(session, name, label)
    if revoke:
        click.echo(f"revoked {count} token(s) {label!r} of {name}")
        if count == 0:
            raise SystemExit(1)
        return
    click.echo(token)
    click.echo(f"token {label!r} for {name}: shown only this once", err=True)


@cli.command("totp")
@click.argument("name")
@click.option("--disable", is_flag=True, help="Remove the second factor instead.")
def totp_cmd(name: str, disable: bool) -> None:
    """Enable a TOTP second factor for NAME and print its provisioning URI once.

    Put the URI into an authenticator app (or a QR code made from it); the login then asks for
    the six-digit code. Enabling again replaces the secret; open sessions of NAME end.

    \b
    Examples:
      falcon user totp alice
      falcon user totp alice --disable
    """
    from falcon.db.engine import transaction
    from falcon.web.users import disable_totp, enable_totp

    ctx = app()
    ctx.ready_engine()
    with transaction(ctx.sessions) as session:
        if disable:
            disable_totp(session, name)
        else:
            uri = enable_totp(session, name)
    if disable:
        click.echo(f"second factor of {name} removed")
        return
    click.echo(uri)
    click.echo(f"TOTP enabled for {name}: add the URI above to an authenticator app now", err=True)
