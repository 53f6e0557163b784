"""Profiles: the built-ins, validation that names the file and the key, and where profiles live."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falcon.cli import main
from falcon.config import load_settings
from falcon.errors import ValidationError
from falcon.screener.profiles import (
    BUILTIN_DIR,
    DEFAULT_MIN_DOLLAR_VOLUME,
    load_profile,
    load_profiles,
    parse_profile,
)

BUILTINS = {"momentum_breakout", "oversold_bounce", "trend_pullback", "volatility_squeeze",
            "gap_and_go"}
VALID: dict[str, Any] = {
    "name": "my_breakout",
    "description": "test",
    "universe": {"min_price": 5, "max_price": 500, "min_avg_volume": 1e5,
                 "exclude": ["SPY"], "types": ["CS"]},
    "conditions": [{"expr": "close > highest(close, 20)[1]", "reason": "close {left} > {right}"},
                   "volume >= 1.5 * sma(volume, 20)[1]"],
    "factors": [{"name": "rv", "expr": "volume / sma(volume, 20)[1]", "weight": 0.6,
                 "normalize": "zscore", "clip": 2},
                {"name": "roc", "expr": "roc(close, 20)", "weight": 0.4}],
    "top_n": 15,
    "levels": {"entry_pct": 1.0, "stop_atr": 2, "target_r": 2},
    "schedule": ["16:30", "45 9 * * mon-fri"],
}


def test_builtins_load_and_are_complete() -> None:
    profiles = load_profiles(load_settings())
    assert set(profiles) >= BUILTINS
    for p in profiles.values():
        assert p.universe.min_avg_dollar_volume >= DEFAULT_MIN_DOLLAR_VOLUME
        assert p.factors and p.schedule and p.top_n > 0
        assert p.source.startswith(str(BUILTIN_DIR))
    # SMA200 needs 200 sessions; the warm-up gives the recursive smoothings room to settle too.
    assert profiles["trend_pullback"].warmup_bars >= 250
    assert profiles["volatility_squeeze"].warmup_bars >= 140


def test_a_valid_profile_parses_with_defaults() -> None:
    p = parse_profile(VALID)
    assert p.universe.min_avg_dollar_volume == DEFAULT_MIN_DOLLAR_VOLUME
    assert p.universe.exclude == ("SPY",) and p.universe.needs_reference
    assert p.conditions[1].expr == "volume >= 1.5 * sma(volume, 20)[1]"
    assert p.conditions[1].reason is None
    assert p.factors[1].normalize == "rank"
    assert (p.levels.entry_pct, p.levels.entry_atr, p.levels.target_r, p.levels.target_atr) == (
        1.0, None, 2, None)
    assert parse_profile(p.to_dict()).to_dict() == p.to_dict()


@pytest.mark.parametrize(("path", "value", "message"), [
    (["top_n"], 0, "top_n: 0 is less than the minimum of 1"),
    (["universe", "min_price"], "cheap", "universe.min_price: 'cheap' is not of type 'number'"),
    (["universe", "colour"], "red", "universe: unknown key ('colour' was unexpected)"),
    (["factors", 1, "weight"], "heavy", "factors[1].weight: 'heavy' is not of type 'number'"),
    (["factors", 1, "normalize"], "log", "factors[1].normalize: 'log' is not one of"),
    (["factors", 1, "name"], "rv", "factors[1].name: duplicate factor name 'rv'"),
    (["factors", 1, "clip"], 3, "factors[1].clip: only applies to normalize: zscore"),
    (["factors", 0, "expr"], "rsi(close, 14) <", "factors[0].expr: "),
    (["conditions", 1], "frobnicate(close) > 1", "conditions[1]: unknown function 'frobnicate'"),
    (["conditions", 0, "reason"], "{nope}", "conditions[0].reason: unknown placeholder {nope}"),
    (["conditions", 0], {"exp": "close > 1"}, "conditions[0]: must be an expression string"),
    (["schedule", 1], "25:99", "schedule[1]: '25:99' is neither HH:MM nor a 5-field cron"),
    (["schedule", 0], "61 9 * * *", "schedule[0]: '61 9 * * *'"),
    (["levels", "entry_atr"], 0.5, "levels.entry_pct: give entry_atr or entry_pct, not both"),
    (["universe", "max_price"], 1, "universe.max_price: 1 is below min_price 5"),
    (["name"], "Bad Name", "name: 'Bad Name' does not match"),
    (["top_n"], float("nan"), "top_n: nan is not of type 'integer'"),
])
def test_problems_name_the_key(path: list[Any], value: Any, message: str) -> None:
    doc = copy.deepcopy(VALID)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError) as info:
        parse_profile(doc, source="mine.yaml")
    assert any(p.startswith("mine.yaml: ") and message in p for p in info.value.problems), (
        info.value.problems)
    assert str(info.value).startswith("mine.yaml: invalid profile: ")


def test_files_user_dirs_and_errors(tmp_path: Path, runner: CliRunner) -> None:
    settings = load_settings()
    user_dir = settings.home / "profiles"
    user_dir.mkdir(parents=True)
    # A user profile with a built-in's name replaces it.
    override = {**VALID, "name": "gap_and_go", "top_n": 3}
    (user_dir / "gap_and_go.yaml").write_text(yaml.safe_dump(override))
    (user_dir / "mine.yml").write_text(yaml.safe_dump({**VALID, "name": "mine"}))
    profiles = load_profiles(settings)
    assert profiles["gap_and_go"].top_n == 3 and "mine" in profiles
    assert profiles["gap_and_go"].source == str(user_dir / "gap_and_go.yaml")

    bad = user_dir / "broken.yaml"
    bad.write_text("name: broken\nconditions: [close > 1\n")
    with pytest.raises(ValidationError, match=r"broken.yaml: line \d+ not valid YAML"):
        load_profiles(settings)
    bad.write_text(yaml.safe_dump({**VALID, "name": "other"}))
    with pytest.raises(ValidationError, match=r"broken\.yaml: name: 'other' differs from the file"):
        load_profile(bad)
    bad.write_text(yaml.safe_dump({**VALID, "name": "broken", "top_n": "ten"}))
    result = runner.invoke(main, ["screen", "check", str(bad), str(user_dir / "mine.yml")])
    assert result.exit_code == 65
    assert f"{bad}: top_n: 'ten' is not of type 'integer'" in result.output
    assert "mine.yml: ok (mine, 2 conditions" in result.output
    bad.unlink()
    result = runner.invoke(main, ["screen", "profiles", "--json"])
    assert result.exit_code == 0 and '"name": "mine"' in result.output


# --- property tests ----------------------------------------------------------------------------

_names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
_exprs = st.sampled_from(["close > sma(close, 20)", "rsi(close, 14) < 30",
                          "bollinger(close, 20, 2).lower < close", "volume > 1000",
                          "ema(close, 12) crosses_above ema(close, 26)",
                          "close > highest(close, 20)[1] and close > open"])
_factor = st.fixed_dictionaries(
    {"name": _names, "expr": _exprs.map(lambda e: e.split(" <")[0].split(" >")[0]),
     "weight": st.floats(-5, 5, allow_nan=False).filter(lambda w: abs(w) > 1e-6)},
    optional={"normalize": st.sampled_from(["rank", "none"])})
_profile = st.fixed_dictionaries(
    {"name": _names, "conditions": st.lists(_exprs, min_size=1, max_size=4)},
    optional={
        "description": st.text(max_size=30),
        "top_n": st.integers(1, 500),
        "factors": st.lists(_factor, max_size=4, unique_by=lambda f: f["name"]),
        "universe": st.fixed_dictionaries({}, optional={
            "min_price": st.floats(0, 10), "min_avg_volume": st.integers(0, 10**7),
            "exclude": st.lists(st.from_regex(r"[A-Z]{1,5}", fullmatch=True), max_size=3)}),
        "schedule": st.lists(st.from_regex(r"(0\d|1\d|2[0-3]):[0-5]\d", fullmatch=True),
                             min_size=1, max_size=3),
        "levels": st.fixed_dictionaries({}, optional={
            "stop_atr": st.floats(0.1, 5), "entry_atr": st.floats(0, 2),
            "atr_period": st.integers(2, 50)}),
    })


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_profile)
def test_valid_documents_round_trip(doc: dict[str, Any]) -> None:
    profile = parse_profile(doc)
    again = parse_profile(yaml.safe_load(yaml.safe_dump(profile.to_dict())))
    assert again.to_dict() == profile.to_dict()
    assert again.warmup_bars >= max(20, profile.levels.atr_period)


_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=10)


@settings(max_examples=150, deadline=None)
@given(_profile, st.sampled_from(["name", "conditions", "factors", "universe", "top_n",
                                  "levels", "schedule", "llm", "warmup_bars"]), _junk)
def test_any_mutation_is_accepted_or_a_validation_error_naming_the_key(
        doc: dict[str, Any], key: str, junk: Any) -> None:
    bad = {**doc, key: junk}
    try:
        parse_profile(bad, source="p.yaml")
    except ValidationError as exc:
        assert exc.problems and all(p.startswith("p.yaml: ") for p in exc.problems)
        assert any(key in p or "(root)" in p for p in exc.problems), exc.problems
