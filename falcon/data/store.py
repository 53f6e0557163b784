"""The Parquet store of bars under ``$FALCON_HOME/market_data``.

Layout (chosen so that a whole-market screen reads only the files of the dates it needs)::

    market_data/
      day/YYYY/YYYY-MM.parquet            every ticker's day bars of one month
      minute/YYYY/MM/YYYY-MM-DD.parquet   every ticker's minute bars of one session
      rejects/<kind>/<source>.csv         rows quarantined from a flat file, with a reason
      reference/splits.parquet            the splits the reader adjusts for (mirror of the DB)
      incoming/<kind>/                    flat files being downloaded by ``falcon data sync``
      .lock                               one writer at a time (flock)

A month of the whole market's day bars is ~230k rows (a few MB): a year is 12 files, and one day's
import rewrites one month file. Minute bars (1-2M rows per session) get a file per session. Inside
each file rows are sorted by ``ticker, ts`` and written in row groups with statistics, so a read of
a few tickers skips most of every file. Columns: :data:`~falcon.data.flatfile.BAR_COLUMNS` plus
``date``, the New York session date.

Every file is written to a temporary name in the same folder, flushed to disk and renamed over the
old one (``os.replace``): a reader sees the old file or the new one, never half of one, and a
crash leaves at most a ``.tmp`` file that readers ignore and the next import removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from pathlib import Path

import polars as pl

from falcon.config import Settings
from falcon.data.flatfile import BAR_COLUMNS, KINDS, TS_TYPE, Kind
from falcon.errors import DataError

_STALE_TMP_S = 3600.0

#: The schema of a partition file.
STORE_SCHEMA: dict[str, pl.DataType] = {
    "ticker": pl.String(),
    "ts": TS_TYPE,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "transactions": pl.Int64(),
    "date": pl.Date(),
}


def _check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise DataError(f"unknown bar kind {kind!r} (use day or minute)")
    return kind


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` by calling ``write(tmp_path)``, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Store:
    """The bar store rooted at ``root`` (usually ``settings.market_data_dir``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, source: Settings | Store | Path | str) -> Store:
        """The store of settings, a path, or the store itself."""
        if isinstance(source, Store):
            return source
        if isinstance(source, Settings):
            return cls(source.market_data_dir)
        return cls(Path(source))

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # --- paths -----------------------------------------------------------------------------

    def kind_dir(self, kind: str) -> Path:
        """The folder of one kind of bars."""
        return self.root / _check_kind(kind)

    def partition_path(self, kind: str, day: date) -> Path:
        """The file that holds ``day``'s bars of ``kind``."""
        base = self.kind_dir(kind)
        if kind == "day":
            return base / f"{day:%Y}" / f"{day:%Y-%m}.parquet"
        return base / f"{day:%Y}" / f"{day:%m}" / f"{day:%Y-%m-%d}.parquet"

    def rejects_path(self, kind: str, stem: str) -> Path:
        """Where rows quarantined from source ``stem`` go."""
        return self.root / "rejects" / _check_kind(kind) / f"{stem}.csv"

    @property
    def splits_path(self) -> Path:
        """The splits the reader adjusts for."""
        return self.root / "reference" / "splits.parquet"

    def incoming_dir(self, kind: str) -> Path:
        """Where ``falcon data sync`` puts downloaded flat files until they are imported."""
        return self.root / "incoming" / _check_kind(kind)

    def partitions(
        self, kind: str, start: date | None = None, end: date | None = None
    ) -> list[Path]:
        """Existing partition files of ``kind`` that may hold bars from ``start`` to ``end``.

        Pruning is by file name alone: nothing outside the range is opened.
        """
        base = self.kind_dir(kind)
        if not base.exists():
            return []
        files = sorted(p for p in base.glob("**/*.parquet") if not p.name.startswith("."))
        if start is None and end is None:
            return files
        lo = "" if start is None else self._period(kind, start)
        hi = "\uffff" if end is None else self._period(kind, end)
        return [p for p in files if lo <= p.stem <= hi]

    @staticmethod
    def _period(kind: str, day: date) -> str:
        return f"{day:%Y-%m}" if kind == "day" else f"{day:%Y-%m-%d}"

    # --- reading -----------------------------------------------------------------------------

    def scan(self, kind: str, start: date | None = None, end: date | None = None) -> pl.LazyFrame:
        """A lazy frame over the partitions that may hold ``start..end`` (not yet filtered)."""
        files = self.partitions(kind, start, end)
        if not files:
            return pl.LazyFrame(schema=STORE_SCHEMA)
        return pl.scan_parquet(files, schema=STORE_SCHEMA)

    def dates(self, kind: str) -> list[date]:
        """Every session date that has bars of ``kind`` in the store, ascending."""
        if kind == "minute":
            return [date.fromisoformat(p.stem) for p in self.partitions(kind)]
        frame = self.scan(kind).select(pl.col("date").unique()).collect()
        return sorted(frame.get_column("date").to_list())

    def has_date(self, kind: str, day: date) -> bool:
        """True when the store has bars of ``kind`` for ``day``."""
        path = self.partition_path(kind, day)
        if not path.exists():
            return False
        if kind == "minute":
            return True
        found = pl.scan_parquet(path).filter(pl.col("date") == day).select(pl.len()).collect()
        return bool(found.item())

    # --- writing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's writer lock (one import or sync at a time, across processes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                self._remove_stale_tmp()
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _remove_stale_tmp(self) -> None:
        # Leftovers of a crash; anything recent may belong to a writer that does not lock.
        cutoff = time.time() - _STALE_TMP_S
        for kind in KINDS:
            base = self.root / kind
            if not base.exists():
                continue
            for tmp in base.glob("**/.*.tmp"):
                with contextlib.suppress(OSError):
                    if tmp.stat().st_mtime < cutoff:
                        tmp.unlink()

    def replace_dates(self, kind: str, bars: pl.DataFrame) -> list[Path]:
        """Make the store's bars of each date in ``bars`` exactly ``bars``' rows of that date.

        ``bars`` has :data:`STORE_SCHEMA` columns. Dates not in ``bars`` are left alone. Returns
        the partition files written.
        """
        _check_kind(kind)
        if bars.is_empty():
            return []
        bars = bars.select(list(STORE_SCHEMA)).cast(STORE_SCHEMA)  # type: ignore[arg-type]
        written = []
        key = (
            pl.col("date").dt.strftime("%Y-%m")
            if kind == "day"
            else pl.col("date").dt.strftime("%Y-%m-%d")
        )
        lo, hi = bars.get_column("date").min(), bars.get_column("date").max()
        if isinstance(lo, date) and isinstance(hi, date) and self._period(kind, lo) == \
                self._period(kind, hi):
            parts = [bars]  # the usual case, one session: no need to split
        else:
            groups = bars.with_columns(key.alias("_part")).partition_by("_part", as_dict=True)
            parts = [g.drop("_part") for _, g in sorted(groups.items(), key=lambda kv: str(kv[0]))]
        for group in parts:
            first_day = group.get_column("date").min()
            if not isinstance(first_day, date):  # pragma: no cover - dates are never null here
                raise DataError("bars without a date cannot be stored")
            path = self.partition_path(kind, first_day)
            merged = self._merge(path, group)
            self._write(path, merged, kind)
            written.append(path)
        return written

    @staticmethod
    def _merge(path: Path, new: pl.DataFrame) -> pl.DataFrame:
        if not path.exists():
            return new if _sorted_by_ticker_ts(new) else new.sort(["ticker", "ts"])
        replaced = new.get_column("date").unique().implode()
        old = pl.read_parquet(path).filter(~pl.col("date").is_in(replaced))
        if old.is_empty():
            return new.sort(["ticker", "ts"])
        return pl.concat([old, new], how="vertical").sort(["ticker", "ts"])

    @staticmethod
    def _write(path: Path, frame: pl.DataFrame, kind: str) -> None:
        # zstd level 1: nearly the size of the default level at a fraction of its time. Row
        # groups small enough that a few tickers' reads skip most of a file.
        row_group = 65_536 if kind == "day" else 131_072

        def write(tmp: Path) -> None:
            frame.write_parquet(
                tmp, compression="zstd", compression_level=1, statistics=True,
                row_group_size=row_group,
            )

        atomic_write(path, write)

    def delete_dates(self, kind: str, days: Iterable[date]) -> None:
        """Remove the bars of ``days`` (used by tests and by re-imports that found no rows)."""
        for day in sorted(set(days)):
            path = self.partition_path(kind, day)
            if not path.exists():
                continue
            if kind == "minute":
                path.unlink()
                continue
            rest = pl.read_parquet(path).filter(pl.col("date") != day)
            if rest.is_empty():
                path.unlink()
            else:
                self._write(path, rest, kind)

    def write_rejects(self, kind: str, stem: str, rejected: pl.DataFrame | None) -> Path | None:
        """Write (or, with nothing rejected, remove) the quarantine file of source ``stem``."""
        path = self.rejects_path(kind, stem)
        if rejected is None or rejected.is_empty():
            path.unlink(missing_ok=True)
            return None
        frame = rejected.drop("date", strict=False)
        atomic_write(path, lambda tmp: frame.write_csv(tmp))
        return path


def _sorted_by_ticker_ts(frame: pl.DataFrame) -> bool:
    t, ts = pl.col("ticker"), pl.col("ts")
    step = (t > t.shift(1)) | ((t == t.shift(1)) & (ts > ts.shift(1)))
    return bool(frame.select(step.slice(1).fill_null(False).all()).item())


__all__ = ["BAR_COLUMNS", "STORE_SCHEMA", "Store", "atomic_write"]
