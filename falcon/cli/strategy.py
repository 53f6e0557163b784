"""``falcon strategy``: the strategy schema, validation and the built-in strategies."""

from __future__ import annotations

import sys
from typing import Any

import click

from falcon.cli.output import echo_json, echo_table


def _param_value(text: str) -> tuple[str, float]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"expected NAME=VALUE, got {text!r}", param_hint="--param")
    try:
        value: float = int(raw) if raw.strip().lstrip("-").isdigit() else float(raw)
    except ValueError as exc:
        raise click.BadParameter(f"{name}: {raw!r} is not a number", param_hint="--param") from exc
    return name.strip(), value


@click.group("strategy")
def cli() -> None:
    """Strategies as data: the JSON schema, validation, built-ins.

    \b
    Examples:
      falcon strategy list
      falcon strategy show sma_cross --param fast=5
      falcon strategy validate my_strategy.json
    """


@cli.command("schema")
def schema_cmd() -> None:
    """Print the strategy JSON Schema (versioned by its $id).

    \b
    Example:
      falcon strategy schema > strategy-v1.json
    """
    from falcon.strategy import schema

    echo_json(schema())


@cli.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Override a parameter (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def validate_cmd(file: str, params: tuple[str, ...], as_json: bool) -> None:
    """Check a strategy file (JSON or YAML); explain every problem with its path.

    Exits non-zero when the strategy is invalid.

    \b
    Example:
      falcon strategy validate breakout.yaml --param lookback=55
    """
    from pathlib import Path

    from falcon.errors import ValidationError
    from falcon.strategy import load_spec

    overrides = dict(_param_value(p) for p in params)
    try:
        spec = load_spec(Path(file), overrides)
    except ValidationError as exc:
        problems = exc.problems or [str(exc)]
        if as_json:
            echo_json({"valid": False, "file": file, "problems": problems})
        else:
            for problem in problems:
                click.echo(problem)
            click.echo(f"error: {file}: {len(problems)} problem(s)", err=True)
        sys.exit(exc.exit_code)
    summary: dict[str, Any] = {
        "valid": True, "file": file, "name": spec.name, "timeframe": spec.timeframe,
        "direction": str(spec.direction), "params": spec.params, "warmup_bars": spec.warmup_bars,
    }
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"ok: {spec.name} ({spec.timeframe}, {spec.direction}, "
                   f"warm-up {spec.warmup_bars} bars)")


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(as_json: bool) -> None:
    """List the built-in strategies and their parameters.

    \b
    Example:
      falcon strategy list --json
    """
    from falcon.strategy import builtin_names, builtin_spec

    rows: list[dict[str, Any]] = []
    for name in builtin_names():
        spec = builtin_spec(name)
        rows.append({"name": name, "timeframe": spec.timeframe, "params": spec.params,
                     "description": spec.description})
    if as_json:
        echo_json(rows)
        return
    echo_table("Built-in strategies", ["name", "timeframe", "params", "description"],
               [(r["name"], r["timeframe"], ", ".join(f"{k}={v}" for k, v in r["params"].items()),
                 r["description"]) for r in rows])


@cli.command("show")
@click.argument("name")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Override a parameter (repeatable).")
@click.option("--direction", type=click.Choice(["long_only", "long_short"]),
              help="Trade one side or both.")
def show_cmd(name: str, params: tuple[str, ...], direction: str | None) -> None:
    """Print a built-in strategy (or a strategy file) with its parameters resolved.

    \b
    Example:
      falcon strategy show momentum_breakout --param lookback=55 --param volume_mult=2
    """
    from pathlib import Path

    from falcon.strategy import builtin_names, builtin_spec, load_spec

    overrides = dict(_param_value(p) for p in params)
    if name not in builtin_names() and Path(name).is_file():
        spec = load_spec(Path(name), overrides)
    else:
        spec = builtin_spec(name, overrides, direction=direction)
    doc = spec.resolved_document()
    doc["warmup_bars"] = spec.warmup_bars
    echo_json(doc)
