"""The rule language: parsing, errors, round trips, and hostile input."""

from __future__ import annotations

import ast
import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falcon.errors import ValidationError
from falcon.strategy import load_spec
from falcon.strategy.expr import (
    MAX_LENGTH,
    Attr,
    BinOp,
    Call,
    ExprError,
    Field,
    Neg,
    Node,
    Not,
    Num,
    Param,
    Shift,
    parse,
    to_text,
)
from falcon.strategy.functions import analyze


def test_parses_the_documented_examples() -> None:
    assert parse("sma(close,10) crosses_above sma(close,20)") == BinOp(
        "crosses_above",
        Call("sma", (Field("close"), Num(10))), Call("sma", (Field("close"), Num(20))))
    assert parse("close > highest(close, 20)[1]") == BinOp(
        ">", Field("close"), Shift(Call("highest", (Field("close"), Num(20))), 1))
    assert parse("volume >= 1.5 * sma(volume, 20)") == BinOp(
        ">=", Field("volume"), BinOp("*", Num(1.5), Call("sma", (Field("volume"), Num(20)))))
    assert parse("bollinger(close,20,2).lower") == Attr(
        Call("bollinger", (Field("close"), Num(20), Num(2))), "lower")
    assert parse("macd(close).hist > 0 and not rsi(close) > 70") == BinOp(
        "and", BinOp(">", Attr(Call("macd", (Field("close"),)), "hist"), Num(0)),
        Not(BinOp(">", Call("rsi", (Field("close"),)), Num(70))))
    assert parse("sma(close, $fast)[$k]") == Shift(Call("sma", (Field("close"), Param("fast"))),
                                                     Param("k"))
    assert parse("1 - 2 - 3") == BinOp("-", BinOp("-", Num(1), Num(2)), Num(3))
    assert parse("-(1 + 2) * 3") == BinOp("*", Neg(BinOp("+", Num(1), Num(2))), Num(3))


@pytest.mark.parametrize(("text", "message"), [
    ("rsi(close, 14", "expected ')'"),
    ("close[-1] > 0", "cannot be negative"),
    ("close[1.5] > 0", "whole number"),
    ("1 < 2 < 3", "cannot be chained"),
    ("close > 'x'", "unexpected character"),
    ("", "empty"),
    ("close >", "unexpected the end"),
    ("x" * (MAX_LENGTH + 1), "too long"),
    ("(" * 40 + "1" + ")" * 40, "nested too deeply"),
    ("-" * 40 + "1", "nested too deeply"),
    ("not " * 40 + "close > 1", "nested too deeply"),
])
def test_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(ExprError, match=re.escape(message)):
        parse(text)


@pytest.mark.parametrize(("text", "message"), [
    ("__import__('os')", "unexpected character"),
    ("__import__(close) > 1", "unknown function '__import__'"),
    ("clse > 1", "did you mean 'close'"),
    ("smaa(close, 3) > 1", "did you mean 'sma'"),
    ("close.__class__ > 1", "only macd"),
    ("macd(close).foo > 1", "unknown field"),
    ("macd(close) > 1", "multi-valued"),
    ("sma(close, 2.5) > 1", "whole number"),
    ("sma(close, 0) > 1", ">= 1"),
    ("sma(close, $nope) > 1", "unknown parameter"),
    ("sma(close) > 1", "needs its 'n'"),
    ("rsi(close, 14, 3) > 1", "at most 2"),
    ("close + (close > 1) > 1", "needs a number"),
    ("close and close", "needs a condition"),
    ("minutes_since_open() > 30", "needs minute bars"),
    ("rsi > 30", "it is a function"),
])
def test_semantic_errors(text: str, message: str) -> None:
    with pytest.raises(ExprError, match=re.escape(message)):
        analyze(parse(text), {}, "day")


def test_lookback() -> None:
    def lb(text: str) -> int:
        return analyze(parse(text), {"fast": 5}, "day").lookback

    assert lb("sma(close, 20) > 0") == 19
    assert lb("sma(close, $fast) crosses_above sma(close, 20)") == 20
    assert lb("close > highest(close, 20)[1]") == 20
    assert lb("rsi(close, 14) < 30") == 14
    assert lb("macd(close).hist > 0") == 33
    assert lb("adx(14) > 25") == 27
    assert lb("ema(rsi(close, 14), 5) > 50") == 18


# --- properties --------------------------------------------------------------------------------

_names = st.sampled_from(["fast", "slow", "k_1"])
_leaf = st.one_of(
    st.integers(0, 10**6).map(Num),
    st.floats(0, 1e6, allow_nan=False, allow_infinity=False).map(Num),
    _names.map(Param),
    st.sampled_from(["open", "high", "low", "close", "volume"]).map(Field),
)


def _extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    ops = ["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "!=", "crosses_above",
           "crosses_below", "and", "or"]
    return st.one_of(
        st.builds(BinOp, st.sampled_from(ops), children, children),
        st.builds(Neg, children),
        st.builds(Not, children),
        st.builds(Shift, children, st.one_of(st.integers(0, 50), _names.map(Param))),
        st.builds(Attr, children, st.sampled_from(["hist", "lower"])),
        st.builds(Call, st.sampled_from(["sma", "rsi", "macd"]),
                  st.lists(children, max_size=3).map(tuple)),
    )


_trees = st.recursive(_leaf, _extend, max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_trees)
def test_pretty_printer_round_trips(tree: Node) -> None:
    text = to_text(tree)
    assert parse(text) == tree
    assert to_text(parse(text)) == text


_alphabet = st.sampled_from([*"abcxyz_$0123456789.,()[]<>=!+-*/ 'e\"\\{}:;",
                             "sma", "close", "crosses_above", "and", "not", "macd", ".hist"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_alphabet, max_size=40).map("".join))
def test_junk_only_ever_raises_validation_errors(text: str) -> None:
    doc = {"name": "junk", "entry": text, "params": {"fast": {"default": 3}}}
    try:
        load_spec(doc)
    except ValidationError as exc:
        assert exc.problems
        assert all(p.startswith(("entry", "(document)")) for p in exc.problems)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_unicode_only_raises_expr_errors(text: str) -> None:
    with contextlib.suppress(ExprError):
        analyze(parse(text), {}, "day")


@pytest.mark.parametrize("text", [
    "__import__('os').system('touch /tmp/pwned')",
    "exec('1')",
    "eval(close)",
    "close.__class__.__mro__",
    "open('/etc/passwd')",
    "lambda: 1",
    "[x for x in close]",
    "close; import os",
    "a" * 100_000,
    "(" * 5_000,
    "sma(" * 2_000,
])
def test_hostile_input_is_a_validation_error(text: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        load_spec({"name": "evil", "entry": {"any": [text[:1000], "close > 1"]},
                   "exit": text[:1000]})
    assert err.value.problems
    with pytest.raises(ExprError):
        analyze(parse(text), {}, "day")
    assert not (tmp_path / "pwned").exists()


def test_the_strategy_package_never_evaluates_text() -> None:
    import falcon.indicators
    import falcon.strategy

    files = [Path(falcon.indicators.__file__), *Path(falcon.strategy.__file__).parent.rglob("*.py")]
    forbidden = {"eval", "exec", "compile", "__import__"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in forbidden, f"{path}: calls {node.func.id}()"
