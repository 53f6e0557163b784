"""``falcon strategy`` through click."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from falcon.cli import main


def test_every_command_has_an_example(runner: CliRunner) -> None:
    group = main.get_command(click.Context(main), "strategy")
    assert isinstance(group, click.Group)
    assert "Example" in (group.help or "")
    for name in group.list_commands(click.Context(group)):
        result = runner.invoke(main, ["strategy", name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example" in result.output, name


def test_schema(runner: CliRunner) -> None:
    result = runner.invoke(main, ["strategy", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["$id"].endswith("v1.json")


def test_list_and_show(runner: CliRunner) -> None:
    result = runner.invoke(main, ["strategy", "list", "--json"])
    assert result.exit_code == 0
    assert "sma_cross" in [r["name"] for r in json.loads(result.output)]
    result = runner.invoke(main, ["strategy", "show", "sma_cross", "--param", "fast=5"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["entry"] == "sma(close, 5) crosses_above sma(close, 20)"
    assert doc["params"]["fast"]["value"] == 5
    result = runner.invoke(main, ["strategy", "show", "sma_cross", "--param", "fast=500"])
    assert result.exit_code == 65
    assert "above its maximum" in result.output
    result = runner.invoke(main, ["strategy", "show", "nope"])
    assert result.exit_code == 66


def test_validate(runner: CliRunner, tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"name": "g", "entry": "rsi(close, 14) < 30"}))
    result = runner.invoke(main, ["strategy", "validate", str(good)])
    assert result.exit_code == 0 and "ok: g" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nentry:\n  all:\n    - close > 1\n    - rsi(close, 14\n")
    result = runner.invoke(main, ["strategy", "validate", str(bad)])
    assert result.exit_code == 65
    assert "entry.all[1]: 'rsi(close, 14' is not a valid expression" in result.output
    result = runner.invoke(main, ["strategy", "validate", str(bad), "--json"])
    assert result.exit_code == 65
    assert json.loads(result.output)["valid"] is False
    result = runner.invoke(main, ["strategy", "validate", str(tmp_path / "none.json")])
    assert result.exit_code == 66
