"""``falcon paper`` and ``falcon trader``: every command documents an example; the admin path."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from falcon.cli import main
from falcon.cli.paper import cli as paper_cli
from falcon.cli.trader import cli as trader_cli


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = [(prefix, group)]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += _commands(command, f"{prefix} {name}")
        else:
            out.append((f"{prefix} {name}", command))
    return out


@pytest.mark.parametrize(
    ("path", "command"),
    _commands(paper_cli, "paper") + _commands(trader_cli, "trader"),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_command_has_an_example(path: str, command: click.Command) -> None:
    assert "Example" in (command.help or ""), path


def test_account_status_halt_resume_limits(runner: CliRunner) -> None:
    def run(*args: str) -> str:
        result = runner.invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    assert "created paper account main" in run("paper", "account", "create", "main",
                                               "--cash", "5000")
    limits = json.loads(run("paper", "limits", "set", "--account", "main", "--max-positions",
                            "3"))
    assert limits["max_open_positions"] == 3
    status = json.loads(run("paper", "status", "--account", "main", "--json"))
    assert status["account"]["cash"] == 5000
    assert status["limits"]["max_open_positions"] == 3
    assert status["halted"] is False
    run("paper", "halt", "--account", "main", "--reason", "drill")
    assert json.loads(run("paper", "status", "--account", "main", "--json"))["halted"] is True
    run("paper", "resume", "--account", "main")
    text = run("paper", "status", "--account", "main")
    assert "trading" in text
    bad = runner.invoke(main, ["paper", "status", "--account", "nope"])
    assert bad.exit_code == 66 and "no paper account" in bad.output
