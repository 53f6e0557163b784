"""``falcon web``: the dashboard on Flask's development server (gunicorn serves it on a node)."""

from __future__ import annotations

import click

from falcon.cli.context import app


@click.command("web")
@click.option("--host", help="Address to listen on (default web.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default web.port, 8080).")
def cli(host: str | None, port: int | None) -> None:
    """Serve the dashboard for development or a single machine.

    Migrates a single-node SQLite database first; on PostgreSQL run `falcon db upgrade` once.
    Browsers send the session cookie over plain http only to localhost: for another address set
    FALCON_WEB__SECURE_COOKIES=false or put TLS in front. Create a login with `falcon user add`.

    \b
    Example:
      falcon user add alice --admin
      falcon web --host 0.0.0.0 --port 8080
    """
    from falcon.web import create_app

    ctx = app()
    ctx.ready_engine()
    settings = ctx.settings
    web_app = create_app(settings)
    bind_host = host or settings.web.host
    bind_port = port or settings.web.port
    click.echo(f"Falcon dashboard on http://{bind_host}:{bind_port}/ (Ctrl-C to stop)", err=True)
    # threaded: each live-update stream holds a thread for up to SSE_MAX_SECONDS.
    web_app.run(host=bind_host, port=bind_port, debug=False, threaded=True, use_reloader=False)
