"""Strategy documents: schema errors with paths, parameters, risk, built-ins, YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from falcon.domain.rules import Direction, SizingKind, StopKind
from falcon.errors import NotFound, ValidationError
from falcon.strategy import (
    SCHEMA_ID,
    builtin_names,
    builtin_spec,
    load_spec,
    schema,
)


def _doc(**extra: Any) -> dict[str, Any]:
    return {"name": "t", "entry": "close > sma(close, 5)", **extra}


def _problems(doc: Any, params: dict[str, float] | None = None) -> list[str]:
    with pytest.raises(ValidationError) as err:
        load_spec(doc, params)
    return err.value.problems


def test_schema_is_versioned() -> None:
    assert schema()["$id"] == SCHEMA_ID
    assert "v1" in SCHEMA_ID


def test_minimal_document_defaults() -> None:
    spec = load_spec(_doc())
    assert spec.timeframe == "day"
    assert spec.direction is Direction.LONG_ONLY
    assert spec.risk.sizing.kind is SizingKind.ALL_IN
    assert spec.risk.max_positions == 1
    assert spec.universe.tickers is None and spec.universe.screener is None
    assert spec.warmup_bars == 4
    assert set(spec.rules) == {"entry_long"}


def test_every_error_is_reported_with_its_path() -> None:
    problems = _problems(_doc(
        entry={"all": ["close > 1", "rsi(close, 14"]},
        exit={"any": [{"left": "close", "op": ">", "right": "highest(close, 20)["}]},
    ))
    assert problems == [
        "entry.all[1]: 'rsi(close, 14' is not a valid expression: "
        "expected ')', found the end at column 14",
        "exit.any[0].right: 'highest(close, 20)[' is not a valid expression: "
        "expected a whole number of bars ago, found the end at column 20",
    ]


def test_schema_errors_have_paths() -> None:
    problems = _problems({"name": "t", "entry": {"all": []}, "timeframe": "week",
                          "stop_loss": {"percent": -1}, "sizing": {"kind": "lots"}, "extra": 1})
    text = "\n".join(problems)
    assert "(document): Additional properties are not allowed ('extra'" in text
    assert "entry.all: [] should be non-empty" in text
    assert "timeframe: 'week' is not one of ['day', 'minute']" in text
    assert "stop_loss.percent: -1 is less than or equal to the minimum of 0" in text
    assert "sizing.kind: 'lots' is not one of" in text


def test_not_an_object() -> None:
    assert _problems("[1, 2]") == ["(document): expected an object at the top"]


def test_params_resolve_validate_and_override() -> None:
    doc = _doc(params={"n": {"default": 5, "min": 2, "max": 50}},
               entry="close > sma(close, $n)", max_bars="$n")
    assert load_spec(doc).params == {"n": 5}
    spec = load_spec(doc, {"n": 30})
    assert spec.params == {"n": 30} and spec.risk.max_bars == 30 and spec.warmup_bars == 29
    assert _problems(doc, {"n": 60}) == ["params.n: 60 is above its maximum 50"]
    assert _problems(doc, {"m": 3}) == ["params.m: unknown parameter (this strategy has: n)"]
    assert "whole number" in _problems(doc, {"n": 7.5})[0]
    assert _problems(_doc(stop_loss={"percent": "$nope"})) == [
        "stop_loss.percent: unknown parameter $nope (declare it under params)"]


def test_risk_rules() -> None:
    spec = load_spec(_doc(
        direction="long_short", short_entry="close < sma(close, 5)",
        stop_loss={"atr": 2.5, "atr_period": 10}, take_profit={"percent": 8},
        trailing_stop={"atr": 3, "atr_period": 10}, max_bars=20, max_positions=5,
        sizing={"kind": "risk", "value": 0.01}, universe={"tickers": ["AAPL", "BRK.B"]},
    ))
    r = spec.risk
    assert r.stop_loss is not None and r.stop_loss.kind is StopKind.ATR
    assert r.stop_loss.value == 2.5 and r.stop_loss.atr_period == 10
    assert r.take_profit is not None and r.take_profit.value == pytest.approx(0.08)
    assert r.max_bars == 20 and r.max_positions == 5 and r.sizing.value == 0.01
    assert spec.direction is Direction.LONG_SHORT and spec.atr_period == 10
    assert spec.universe.tickers == ("AAPL", "BRK.B")
    assert spec.warmup_bars == 10  # the ATR of the stop needs more than the rules


@pytest.mark.parametrize(("extra", "problem"), [
    ({"sizing": {"kind": "risk", "value": 0.01}}, "sizing: risk sizing needs a stop_loss"),
    ({"sizing": {"kind": "fraction", "value": 2}}, "sizing: fraction sizing is a fraction"),
    ({"sizing": {"kind": "fraction"}}, "sizing: fraction sizing needs a value"),
    ({"stop_loss": {"atr": 2, "atr_period": 10}, "take_profit": {"atr": 2}},
     "ATR levels must share one atr_period"),
    ({"direction": "long_short"}, "short_entry: a long_short strategy needs a short entry rule"),
    ({"timeframe": "day", "entry": "close > opening_range_high(30)"}, "needs minute bars"),
])
def test_semantic_problems(extra: dict[str, Any], problem: str) -> None:
    assert any(problem in p for p in _problems(_doc(**extra)))


def test_yaml_and_files(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: y\nentry:\n  all:\n    - close > 1\n    - rsi(close, 14) < 30\n")
    assert load_spec(path).name == "y"
    assert load_spec(str(path)).name == "y"
    assert load_spec(path.read_text()).warmup_bars == 14
    jpath = tmp_path / "s.json"
    jpath.write_text(json.dumps(_doc()))
    assert load_spec(jpath).name == "t"
    with pytest.raises(NotFound):
        load_spec(tmp_path / "missing.json")


def test_yaml_aliases_are_refused() -> None:
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nname: t\nentry: close > 1\n"
    problems = _problems(bomb)
    assert "aliases are not allowed" in problems[0]


def test_deep_json_is_a_validation_error() -> None:
    deep = '{"name": "t", "entry": ' + '{"not": ' * 3000 + '"close > 1"' + "}" * 3001
    with pytest.raises(ValidationError):
        load_spec(deep)
    nested = {"not": "close > 1"}
    for _ in range(20):
        nested = {"not": nested}
    assert "nested more than" in _problems(_doc(entry=nested))[0]


def test_builtins() -> None:
    assert builtin_names() == ["bollinger_reversion", "momentum_breakout",
                               "opening_range_breakout", "rsi_reversion", "sma_cross"]
    for name in builtin_names():
        spec = builtin_spec(name)
        assert spec.name == name and spec.warmup_bars >= 1
    sma = builtin_spec("sma_cross", {"fast": 5, "slow": 50})
    assert sma.warmup_bars == 50 and "entry_short" not in sma.rules
    assert "entry_short" in builtin_spec("sma_cross", direction="long_short").rules
    mb = builtin_spec("momentum_breakout").risk
    assert mb.take_profit is not None and mb.take_profit.value == pytest.approx(0.08)
    assert mb.trailing_stop is not None and mb.trailing_stop.value == pytest.approx(0.10)
    assert mb.max_bars == 20
    assert builtin_spec("opening_range_breakout").timeframe == "minute"
    with pytest.raises(NotFound):
        builtin_spec("nope")


def test_resolved_document_substitutes_params() -> None:
    doc = builtin_spec("rsi_reversion", {"period": 7}).resolved_document()
    assert doc["entry"] == "rsi(close, 7) < 30"
    assert doc["stop_loss"] == {"percent": 10}
    assert load_spec({k: v for k, v in doc.items() if k != "params"}).params == {}


def test_schema_errors_and_rule_errors_are_reported_together() -> None:
    """One pass names every mistake: a bad field and a bad rule in the same document."""
    doc = {"name": "x", "timeframe": "weekly",
           "entry": {"all": ["rsi(close,14) < 30", "smaa(close, 5) > 1"]}, "exit": "close <"}
    with pytest.raises(ValidationError) as info:
        load_spec(doc)
    problems = "\n".join(info.value.problems)
    assert "timeframe:" in problems
    assert "entry.all[1]: 'smaa(close, 5) > 1' is not a valid expression" in problems
    assert "did you mean 'sma'" in problems
    assert "exit: 'close <' is not a valid expression" in problems
