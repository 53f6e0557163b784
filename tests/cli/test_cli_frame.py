"""The command frame: help everywhere, one-line errors, exit codes."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from falcon.cli import main


def _walk(
    cmd: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, f"{' '.join((*path, name))} is listed but cannot be loaded"
            yield from _walk(sub, (*path, name))


ALL_COMMANDS = list(_walk(main))


def test_the_expected_commands_exist() -> None:
    names = {" ".join(p) for p, _ in ALL_COMMANDS}
    assert {"db upgrade", "db current", "doctor"} <= names


@pytest.mark.parametrize(
    ("path", "cmd"), ALL_COMMANDS, ids=[" ".join(p) or "falcon" for p, _ in ALL_COMMANDS]
)
def test_every_command_has_help_with_an_example(path: tuple[str, ...], cmd: click.Command) -> None:
    assert cmd.help, f"falcon {' '.join(path)} has no help text"
    assert "Example" in cmd.help, f"falcon {' '.join(path)}: help has no example"
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_config_error_is_one_line_with_exit_code(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALCON_TRADING__STARTING_CASH", "-5")
    result = runner.invoke(main, ["db", "current"])
    assert result.exit_code == 78
    assert result.output == "error: trading.starting_cash: must be > 0\n"


def test_unknown_command_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_doctor_reports_each_check(runner: CliRunner) -> None:
    result = runner.invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["doctor", "--json"])
    assert '"check": "database"' in result.output
    assert '"check": "migrations"' in result.output


def test_doctor_fails_when_not_migrated(runner: CliRunner) -> None:
    result = runner.invoke(main, ["doctor"])
    assert result.exit_code == 1
    assert "run `falcon db upgrade`" in result.output


def test_cli_overrides_reach_job_handlers_through_the_environment(
    tmp_path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """A worker started with --home must hand its jobs that home, not the default one."""
    import os

    from falcon.cli.context import AppContext
    from falcon.config import load_settings

    home = tmp_path / "elsewhere"
    monkeypatch.setenv("FALCON_DATABASE_URL", "")  # so that monkeypatch restores it afterwards
    ctx = AppContext(overrides={"home": home, "database_url": "sqlite:////tmp/x.db"})
    ctx.export_to_environment()
    assert os.environ["FALCON_HOME"] == str(home)
    seen = load_settings()  # what a job handler does
    assert seen.home == home
    assert seen.effective_database_url == "sqlite:////tmp/x.db"
