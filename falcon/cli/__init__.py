"""The ``falcon`` command: a click group whose subcommands live one per module in this package.

Each module ``falcon/cli/<name>.py`` exposes a click command or group called ``cli``; modules are
found by name at start-up and imported only when their command runs (or help lists them), so that
``falcon --help`` stays fast on a Raspberry Pi. Heavy libraries are imported inside the commands.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from pathlib import Path
from typing import Any

import click

from falcon import __version__
from falcon.cli.context import AppContext
from falcon.errors import FalconError

_HIDDEN_MODULES = {"context", "output", "options"}


def _command_modules() -> dict[str, str]:
    names = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _HIDDEN_MODULES:
            continue
        names[info.name.replace("_", "-").removesuffix("-cmd")] = info.name
    return names


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when it is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_command_modules()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        module_name = _command_modules().get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(f"{__name__}.{module_name}")
        command = module.cli
        if not isinstance(command, click.Command):  # pragma: no cover - programming error
            raise TypeError(f"falcon.cli.{module_name}.cli is not a click command")
        return command


class FalconGroup(LazyGroup):
    """The top group: turns the FalconError family into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FalconError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=FalconGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="falcon")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="State folder (default $FALCON_HOME or ~/.local/share/falcon).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML config file (default $FALCON_CONFIG or /etc/falcon/falcon.toml).",
)
@click.option(
    "--database-url", help="Database URL (default $FALCON_DATABASE_URL or SQLite in home)."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or chatter.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def main(
    ctx: click.Context,
    home: Path | None,
    config_file: Path | None,
    database_url: str | None,
    quiet: bool,
    verbose: int,
) -> None:
    """Falcon: screen the US market, backtest strategies and paper-trade the picks.

    \b
    Examples:
      falcon data sample            # load the bundled real market data
      falcon doctor                 # check config, database and data
      falcon db upgrade             # apply database migrations
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, Any] = {"home": home, "database_url": database_url}
    ctx.obj = AppContext(overrides=overrides, config_file=config_file, quiet=quiet)
    ctx.call_on_close(ctx.obj.close)
