"""The screen: built-in profiles on designed data, levels, reasons, filters, no look-ahead."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import talib
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from falcon import calendar as cal
from falcon.cli import main
from falcon.config import Settings, load_settings
from falcon.db.models import Event, ScreenPick, ScreenRun
from falcon.errors import DataError
from falcon.screener.engine import SHORT_TIER, compute, run_screens
from falcon.screener.profiles import load_profiles, parse_profile

from . import synth

D = date(2024, 5, 1)  # a Wednesday session
PROFILES = load_profiles(load_settings())
#: Expressions with a short look-back (RSI, ATR, Bollinger) are computed over this many sessions.
WINDOW = SHORT_TIER


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return synth.universe(D)


@pytest.fixture(scope="module")
def results(bars: pl.DataFrame) -> dict[str, object]:
    return {r.profile.name: r for r in compute(bars.lazy(), list(PROFILES.values()), D)}


@pytest.mark.parametrize(("ticker", "profile"), sorted(synth.EXPECTED.items()))
def test_each_builtin_profile_finds_its_pattern(results: dict, ticker: str, profile: str) -> None:
    picked = [p.ticker for p in results[profile].picks]
    assert ticker in picked, (profile, picked)
    # ... and the sideways or falling scenarios are not mistaken for it.
    others = {t for t, p in synth.EXPECTED.items() if p != profile} - {"GAPG", "BRKT"}
    assert not others & set(picked)


def test_momentum_breakout_pick_in_detail(results: dict, bars: pl.DataFrame) -> None:
    r = results["momentum_breakout"]
    assert r.as_of == D and r.universe_size == 35  # 30 random + 5 liquid scenarios; ILLQ is out
    pick = next(p for p in r.picks if p.ticker == "BRKT")
    brkt = bars.filter(pl.col("ticker") == "BRKT")
    close = brkt["close"].to_numpy()
    high20 = close[-21:-1].max()
    rel = brkt["volume"][-1] / brkt["volume"].to_numpy()[-21:-1].mean()
    assert pick.reasons == [f"close 55 above 20-day high {high20:.1f}",
                            f"relative volume {rel:.2f}x"]
    window = brkt.tail(WINDOW)  # what the screen reads
    atr = talib.ATR(*(window[c].to_numpy() for c in ("high", "low", "close")), 14)[-1]
    assert pick.atr == pytest.approx(atr, abs=1e-6)
    assert pick.close == 55.0
    assert pick.entry_low == pytest.approx(55 - 0.25 * atr, abs=1e-4)
    assert pick.entry_high == pytest.approx(55 + 0.25 * atr, abs=1e-4)
    assert pick.stop == pytest.approx(55 - 2 * atr, abs=1e-4)
    assert pick.target == pytest.approx(55 + 4 * atr, abs=1e-4)
    # Fresh until the close of the next session (Thursday 16:00 New York = 20:00 UTC).
    assert pick.fresh_until == datetime(2024, 5, 2, 20, 0, tzinfo=UTC)
    assert pick.factors["rel_volume"]["value"] == pytest.approx(rel, abs=1e-6)
    assert pick.factors["breakout_pct"]["value"] == pytest.approx((55 / high20 - 1) * 100,
                                                              abs=1e-6)
    assert set(pick.factors["rel_volume"]) == {"value", "normalized", "weight"}
    assert [p.rank for p in r.picks] == list(range(1, len(r.picks) + 1))
    assert [p.score for p in r.picks] == sorted((p.score for p in r.picks), reverse=True)


def test_factor_values_match_talib_on_the_window(results: dict, bars: pl.DataFrame) -> None:
    pick = next(p for p in results["trend_pullback"].picks if p.ticker == "TRPB")
    # The screen computes over its warm-up window only.
    window = bars.filter(pl.col("ticker") == "TRPB").tail(WINDOW)
    close = window["close"].to_numpy()
    assert pick.factors["rsi"]["value"] == pytest.approx(talib.RSI(close, 14)[-1], abs=1e-6)
    full = bars.filter(pl.col("ticker") == "TRPB")["close"].to_numpy()
    sma200 = talib.SMA(full, 200)[-1]  # a long look-back: computed over the full window
    assert pick.factors["trend"]["value"] == pytest.approx((close[-1] / sma200 - 1) * 100,
                                                       abs=1e-6)
    sq = next(p for p in results["oversold_bounce"].picks if p.ticker == "OVSD")
    ovsd = bars.filter(pl.col("ticker") == "OVSD").tail(WINDOW)
    lower = talib.BBANDS(ovsd["close"].to_numpy(), 20, 2, 2)[2][-1]
    assert sq.factors["band_distance"]["value"] == pytest.approx(
        (ovsd["close"][-1] / lower - 1) * 100, abs=1e-6)


def test_liquidity_floor_and_filters(bars: pl.DataFrame) -> None:
    base = PROFILES["momentum_breakout"].to_dict()
    floorless = parse_profile({**base, "universe": {"min_avg_dollar_volume": 0}})
    [r] = compute(bars.lazy(), [floorless], D)
    assert "ILLQ" in [p.ticker for p in r.picks]  # only the $5M default floor kept it out
    default = parse_profile({"name": "x", "conditions": ["close > 0"]})
    assert default.universe.min_avg_dollar_volume == 5e6

    excluded = parse_profile({**base, "universe": {"exclude": ["brkt"]}})
    [r] = compute(bars.lazy(), [excluded], D)
    assert "BRKT" not in [p.ticker for p in r.picks]

    ref = pl.DataFrame({"ticker": ["BRKT", "GAPG"], "type": ["CS", "ETF"],
                        "sector": ["SERVICES-PREPACKAGED SOFTWARE", "BLANK CHECKS"]})
    typed = parse_profile({**base, "universe": {"types": ["CS"]}})
    [r] = compute(bars.lazy(), [typed], D, reference=ref)
    assert [p.ticker for p in r.picks] == ["BRKT"]  # GAPG is an ETF, the rest unknown
    sector = parse_profile({**base, "universe": {"sectors": ["software"]}})
    no_spac = parse_profile({**base, "universe": {"exclude_sectors": ["blank check"]}})
    [r1, r2] = compute(bars.lazy(), [sector, no_spac], D, reference=ref)
    assert [p.ticker for p in r1.picks] == ["BRKT"]
    assert "GAPG" not in [p.ticker for p in r2.picks] and "BRKT" in [p.ticker for p in r2.picks]
    price = parse_profile({**base, "universe": {"max_price": 50}})
    [r] = compute(bars.lazy(), [price], D)
    assert "BRKT" not in [p.ticker for p in r.picks]  # closed at 55


def test_chunks_do_not_change_the_result(bars: pl.DataFrame, results: dict,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from falcon.screener import engine

    monkeypatch.setattr(engine, "READ_CELLS", 5000)  # a few tickers a read
    monkeypatch.setattr(engine, "CHUNK_CELLS", 1)  # one ticker a chunk
    small = compute(bars.lazy(), list(PROFILES.values()), D)
    assert [[p.as_dict() for p in r.picks] for r in small] == [
        [p.as_dict() for p in results[r.profile.name].picks] for r in small]


def test_row_order_does_not_matter(bars: pl.DataFrame, results: dict) -> None:
    # The store's scan gives rows month file by month file; compute puts them in (ticker, date)
    # order itself, whatever order they come in.
    shuffled = bars.sample(fraction=1.0, shuffle=True, seed=3)
    assert shuffled["ticker"].to_list() != bars["ticker"].to_list()
    again = compute(shuffled.lazy(), list(PROFILES.values()), D)
    assert [[p.as_dict() for p in r.picks] for r in again] == [
        [p.as_dict() for p in results[r.profile.name].picks] for r in again]


def test_each_expression_reads_only_its_fields_and_history() -> None:
    from falcon.screener import lang

    assert lang.fields("close > sma(close, 200)") == {"close"}
    assert lang.fields("volume / sma(volume, 20)[1] >= 2") == {"volume"}
    assert lang.fields("atr(14) > 1") == {"high", "low", "close"}
    assert lang.fields("gap() >= 4 and close >= open") == {"open", "close"}
    assert lang.recursive("rsi(close, 14) > rsi(close, 14)[1]")
    assert lang.recursive("close > ema(sma(close, 5), 10)")
    assert not lang.recursive("close <= bollinger(close, 20, 2).lower * 1.02")


def test_fixed_windows_are_exact_with_their_look_back_alone(bars: pl.DataFrame) -> None:
    # SMA200 is computed over exactly 200 sessions (not the 250 of the warm-up) and RSI over
    # SHORT_TIER: both must still be TA-Lib's values over those windows.
    p = parse_profile({"name": "x", "conditions": ["close > 0"], "top_n": 100, "factors": [
        {"name": "sma", "expr": "sma(close, 200)", "weight": 1},
        {"name": "low", "expr": "lowest(close, 120)", "weight": 0},
        {"name": "rsi", "expr": "rsi(close, 14)", "weight": 0},
        {"name": "ema", "expr": "ema(close, 100)", "weight": 0}]})
    [r] = compute(bars.lazy(), [p], D)
    pick = next(x for x in r.pool if x.ticker == "TRPB")
    close = bars.filter(pl.col("ticker") == "TRPB")["close"].to_numpy()
    assert pick.factors["sma"]["value"] == pytest.approx(talib.SMA(close, 200)[-1], abs=1e-6)
    assert pick.factors["low"]["value"] == pytest.approx(talib.MIN(close, 120)[-1], abs=1e-6)
    assert pick.factors["rsi"]["value"] == pytest.approx(
        talib.RSI(close[-WINDOW:], 14)[-1], abs=1e-6)
    # A recursive smoothing that needs more than SHORT_TIER (100 + the margin) gets the whole
    # warm-up (SMA200's 200 + 50 here), as a profile's warmup_bars promises.
    n = p.warmup_bars
    assert n == 250 and len(close) > n
    assert pick.factors["ema"]["value"] == pytest.approx(talib.EMA(close[-n:], 100)[-1],
                                                         abs=1e-6)


def test_top_n_and_a_day_with_no_candidates(bars: pl.DataFrame) -> None:
    wide = parse_profile({"name": "wide", "conditions": ["close > 0"], "top_n": 3,
                          "factors": [{"name": "c", "expr": "close", "weight": 1}]})
    [r] = compute(bars.lazy(), [wide], D)
    # The pool holds what the LLM may re-rank (20 by default), not every candidate.
    assert r.candidates == 35 and len(r.picks) == 3 and len(r.pool) == 20
    assert [p.ticker for p in r.pool[:3]] == [p.ticker for p in r.picks]
    closes = bars.filter(pl.col("date") == D).sort("close", descending=True)
    liquid = set(closes["ticker"]) - {"ILLQ"}
    top = [t for t in closes["ticker"] if t in liquid][:3]
    assert [p.ticker for p in r.picks] == top
    none = parse_profile({"name": "none", "conditions": ["close < 0"]})
    [r] = compute(bars.lazy(), [none], D)
    assert r.picks == [] and r.candidates == 0 and r.universe_size == 35


# --- through the store and the database --------------------------------------------------------


def _settings(tmp_path: Path, db_url: str) -> Settings:
    return load_settings({"home": tmp_path / "home", "database_url": db_url})


def test_no_look_ahead(tmp_path: Path, db_url: str, sessions: sessionmaker[Session]) -> None:
    later = cal.trading_days(date(2024, 5, 2), date(2024, 5, 31))
    full = synth.universe(D, n_random=12, extra_days=later)
    settings = _settings(tmp_path, db_url)
    synth.import_bars(full, tmp_path, settings, sessions)
    # A split after the screened day must not rescale the day's prices either.
    from falcon.data.reference import load_splits

    splits = pl.DataFrame({"ticker": ["BRKT"], "execution_date": [date(2024, 5, 20)],
                           "split_from": [1.0], "split_to": [4.0]})
    from falcon.data.store import Store

    load_splits(sessions, splits, Store.of(settings))
    profiles = list(PROFILES.values())
    with_future = run_screens(settings, sessions, profiles, as_of=D)

    from falcon.data.store import Store

    Store.of(settings).delete_dates("day", later)
    with sessions.begin() as s:
        s.execute(ScreenPick.__table__.delete())
    without = run_screens(settings, sessions, profiles, as_of=D)

    def picks(rs: list) -> list:
        return [[{k: v for k, v in p.as_dict().items()} for p in r.picks] for r in rs]

    assert sum(len(r.picks) for r in with_future) >= 5  # the comparison means something
    assert picks(with_future) == picks(without)
    brkt = next(p for p in with_future[1].picks if p.ticker == "BRKT")
    assert brkt.close == 55.0  # not 13.75: the split in the future is not applied


def test_run_screens_stores_runs_picks_and_an_event(tmp_path: Path, db_url: str,
                                                    sessions: sessionmaker[Session],
                                                    bars: pl.DataFrame) -> None:
    settings = _settings(tmp_path, db_url)
    profiles = [PROFILES["momentum_breakout"], PROFILES["gap_and_go"]]
    results = run_screens(settings, sessions, profiles, as_of=D, bars=bars.lazy())
    with sessions() as s:
        runs = list(s.scalars(select(ScreenRun).order_by(ScreenRun.id)))
        assert [(r.profile, r.as_of, r.status, r.ranking) for r in runs] == [
            ("momentum_breakout", D, "done", "rules"), ("gap_and_go", D, "done", "rules")]
        assert runs[0].universe_size == 35 and runs[0].finished_at is not None
        stored = runs[0].picks
        assert [p.ticker for p in stored] == [p.ticker for p in results[0].picks]
        brkt = next(p for p in stored if p.ticker == "BRKT")
        assert brkt.reasons[0].startswith("close 55 above 20-day high")
        assert brkt.factors["rel_volume"]["weight"] == 0.4
        assert brkt.stop < brkt.entry_low < brkt.close < brkt.entry_high < brkt.target
        assert brkt.fresh_until == datetime(2024, 5, 2, 20, 0, tzinfo=UTC)
        events = list(s.scalars(select(Event).where(Event.kind == "screen").order_by(Event.id)))
        assert [e.payload["run_id"] for e in events] == [r.id for r in runs]
        assert "BRKT" in events[0].payload["tickers"]


def test_a_day_without_bars_fails_the_run(tmp_path: Path, db_url: str,
                                          sessions: sessionmaker[Session],
                                          bars: pl.DataFrame) -> None:
    settings = _settings(tmp_path, db_url)
    with pytest.raises(DataError, match="no day bars for 2024-05-02"):
        run_screens(settings, sessions, [PROFILES["gap_and_go"]], as_of=date(2024, 5, 2),
                    bars=bars.lazy())
    with pytest.raises(DataError, match="not an NYSE trading day"):
        run_screens(settings, sessions, [PROFILES["gap_and_go"]], as_of=date(2024, 5, 4))
    with sessions() as s:
        [run] = list(s.scalars(select(ScreenRun)))
        assert run.status == "failed" and "no day bars" in (run.error or "")


def test_cli_screen_run_show_profiles(tmp_path: Path, runner: CliRunner,
                                      bars: pl.DataFrame) -> None:
    settings = load_settings()
    engine_sessions = None
    from falcon.db.engine import make_engine, session_factory
    from falcon.db.migrate import upgrade

    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    engine_sessions = session_factory(engine)
    synth.import_bars(bars.filter(pl.col("ticker").is_in(["BRKT", "GAPG", "R001", "R002"])),
                      tmp_path, settings, engine_sessions)
    engine.dispose()

    result = runner.invoke(main, ["screen", "run", "--profile", "momentum_breakout",
                                  "--date", "2024-05-01", "--json"])
    assert result.exit_code == 0, result.output
    [doc] = json.loads(result.output)
    assert doc["profile"] == "momentum_breakout" and doc["as_of"] == "2024-05-01"
    assert [p["ticker"] for p in doc["picks"]][:2] == ["GAPG", "BRKT"]
    result = runner.invoke(main, ["screen", "show", str(doc["run_id"]), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["status"] == "done" and shown["picks"][1]["ticker"] == "BRKT"
    assert shown["picks"][1]["stop"] == doc["picks"][1]["stop"]
    result = runner.invoke(main, ["screen", "run", "--all", "--date", "2024-05-01"])
    assert result.exit_code == 0, result.output
    assert "volatility_squeeze 2024-05-01" in result.output
    result = runner.invoke(main, ["screen", "profiles"])
    assert result.exit_code == 0 and "trend_pullback" in result.output
    result = runner.invoke(main, ["screen", "runs", "--json"])
    assert len(json.loads(result.output)) == 6
    result = runner.invoke(main, ["screen", "show", "999"])
    assert result.exit_code == 66 and "no screen run 999" in result.output
    result = runner.invoke(main, ["screen", "run"])
    assert result.exit_code == 2 and "--profile NAME" in result.output
    result = runner.invoke(main, ["screen", "run", "--profile", "nope"])
    assert result.exit_code == 66 and "no profile 'nope'" in result.output


def test_scoring_normalisations() -> None:
    from falcon.screener.scoring import format_number, normalize

    s = pl.Series("x", [1.0, 2.0, 2.0, None, 10.0])
    assert normalize(s, "rank").to_list() == [0.25, 0.625, 0.625, 0.0, 1.0]
    z = normalize(s, "zscore", clip=1.0).to_list()
    assert z[3] == 0.0 and z[4] == 1.0 and min(z) >= -1.0
    assert normalize(pl.Series("x", [3.0, 3.0]), "zscore").to_list() == [0.0, 0.0]
    assert normalize(pl.Series("x", [3.0, float("nan")]), "none").to_list() == [3.0, 0.0]
    assert [format_number(v) for v in (182.34, 2.3, 0.0421, 5e6, None, np.nan, -0.0)] == [
        "182.3", "2.3", "0.0421", "5,000,000", "n/a", "n/a", "0"]
