"""The Parquet store of bars under ``$FALCON_HOME/market_data``.

Layout (chosen so that a whole-market screen reads only the files of the dates it needs)::

    market_data/
      day/YYYY/MM/YYYY-MM-DD.parquet              every ticker's day bars of one session
      day/YYYY/MM/YYYY-MM-DD_YYYY-MM-DD.parquet   ... of every session from the first date to
                                                  the second (a compacted part of the month)
      minute/YYYY/MM/YYYY-MM-DD.parquet           every ticker's minute bars of one session
      rejects/<kind>/<source>.csv                 rows quarantined from a flat file, with a reason
      reference/splits.parquet                    the splits the reader adjusts for (DB mirror)
      incoming/<kind>/                            flat files being downloaded by ``data sync``
      .lock                                       one writer at a time (flock)

A file's name is its *span*: the file is the whole truth about every session from its first to
its last date (a session in the span without rows had no bars). Importing one day file (how they
arrive: one a day) writes one small session file and touches nothing else, so its cost does not
grow with the month. A batch of several sessions of a month, a re-import of a session inside a
compacted span, and a month that has gathered :data:`MAX_FILES_PER_MONTH` files or that is over
(the store holds a later month) are *compacted*: the month's files and the new rows are rewritten
as one file spanning them all. A year is then about a dozen files, as before, plus the few
session files of the running month (written uncompressed, as they are soon rewritten; every other
file is zstd-compressed). Inside each file rows are sorted by ``ticker, ts`` and
written in row groups with statistics, so a read of a few tickers skips most of every file.
Columns: :data:`~falcon.data.flatfile.BAR_COLUMNS` plus ``date``, the New York session date.
(``day/YYYY/YYYY-MM.parquet``, the month files of earlier versions, are read as spanning their
month and are replaced by the first compaction of that month.)

Every file is written to a temporary name in the same folder and renamed over the old one
(``os.replace``): a reader sees the old file or the new one, never half of one, and a crash of the
process leaves at most a ``.tmp`` file that readers ignore and the next import removes. Flushing
to disk (fsync of the file and its folder) is the setting ``data.fsync``, off by default: a power
loss may then leave the newest files empty or torn, and importing the same flat files again
rewrites them (the import checks the stored file before it skips a file as unchanged). A compacted
file makes the files inside its span *superseded* the moment it is renamed into place: readers
skip them at once (so a crash before they are deleted duplicates nothing), and a writer deletes
them once they have been superseded for an hour (a reader may still be reading them).
"""

from __future__ import annotations

import calendar as _calendar
import contextlib
import fcntl
import itertools
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from falcon.config import Settings
from falcon.data.flatfile import BAR_COLUMNS, KINDS, TS_TYPE, Kind, strictly_sorted
from falcon.errors import DataError

_STALE_TMP_S = 3600.0
#: A month with more files than this is compacted. Reads pay about a millisecond per file: with
#: at most 4 in the running month a year's read stays within a few per cent of one file a month,
#: and the extra compactions cost a month of daily imports only ~6% more than a cap of 8 does.
MAX_FILES_PER_MONTH = 4

_SPAN_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:_(\d{4}-\d{2}-\d{2}))?$")
_LEGACY_MONTH = re.compile(r"^(\d{4})-(\d{2})$")

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

Span = tuple[date, date]


def _check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise DataError(f"unknown bar kind {kind!r} (use day or minute)")
    return kind


def atomic_write(path: Path, write: Callable[[Path], object], *, fsync: bool = False) -> None:
    """Write ``path`` by calling ``write(tmp_path)``, then rename the result over ``path``.

    The rename alone makes the write atomic against a crash of the process: ``path`` is the old
    file or the new one. With ``fsync`` (setting ``data.fsync``) the temporary file is flushed
    to disk before the rename and the folder after it, so the new file also survives a power
    loss; without it the newest files may come back empty or torn after one, which the import
    detects and repairs (see :meth:`Store.intact`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(tmp)
        if fsync:
            _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_path(path.parent)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_PARQUET_MAGIC = b"PAR1"


def parquet_intact(path: Path) -> bool:
    """True when ``path`` is a whole Parquet file: both magic numbers and a footer that parses.

    Cheap (two small reads and the footer): it catches the missing, empty and truncated files a
    power loss can leave behind without ``data.fsync``, not a page damaged inside a whole file.
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 12 or fh.read(4) != _PARQUET_MAGIC:
                return False
            fh.seek(size - 8)
            tail = fh.read(8)
        footer = int.from_bytes(tail[:4], "little")
        if tail[4:] != _PARQUET_MAGIC or footer + 12 > size:
            return False
        pl.read_parquet_schema(path)
    except (OSError, pl.exceptions.PolarsError):
        return False
    return True


def span_of(path: Path) -> Span | None:
    """The sessions a partition file is the truth about, from its name (None: not a partition)."""
    if path.name.startswith(".") or path.suffix != ".parquet":
        return None
    stem = path.stem
    found = _SPAN_NAME.match(stem)
    try:
        if found:
            lo = date.fromisoformat(found.group(1))
            hi = date.fromisoformat(found.group(2)) if found.group(2) else lo
            return (lo, hi) if lo <= hi else None
        legacy = _LEGACY_MONTH.match(stem)
        if legacy:
            year, month = int(legacy.group(1)), int(legacy.group(2))
            last = _calendar.monthrange(year, month)[1]
            return date(year, month, 1), date(year, month, last)
    except ValueError:
        return None
    return None


def _is_legacy(path: Path) -> bool:
    return _LEGACY_MONTH.match(path.stem) is not None


def _live(files: Iterable[tuple[Span, Path]]) -> tuple[list[tuple[Span, Path]], list[Path]]:
    """(live files in time order, superseded files): a file inside another's span is superseded.

    Writers keep live spans disjoint, so one sweep in (first date, widest first) order finds
    every file whose span lies inside an earlier-starting or wider one.
    """
    ordered = sorted(files, key=lambda sp: (sp[0][0], -sp[0][1].toordinal(), _is_legacy(sp[1])))
    live: list[tuple[Span, Path]] = []
    superseded: list[Path] = []
    reach: date | None = None
    for span, path in ordered:
        if reach is not None and span[1] <= reach:
            superseded.append(path)
            continue
        live.append((span, path))
        reach = span[1]
    return live, superseded


def _month_key(day: date) -> tuple[int, int]:
    return day.year, day.month


class Store:
    """The bar store rooted at ``root`` (usually ``settings.market_data_dir``)."""

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = Path(root)
        self.fsync = fsync  # setting data.fsync: see atomic_write

    @classmethod
    def of(cls, source: Settings | Store | Path | str) -> Store:
        """The store of settings, a path, or the store itself."""
        if isinstance(source, Store):
            return source
        if isinstance(source, Settings):
            return cls(source.market_data_dir, fsync=source.data.fsync)
        return cls(Path(source))

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # --- paths -----------------------------------------------------------------------------

    def kind_dir(self, kind: str) -> Path:
        """The folder of one kind of bars."""
        return self.root / _check_kind(kind)

    def partition_path(self, kind: str, day: date) -> Path:
        """The file an import of ``day`` alone writes (one session's bars of ``kind``).

        For day bars the session may instead live in a compacted file: see :meth:`file_of`.
        """
        return self._span_path(kind, day, day)

    def _span_path(self, kind: str, lo: date, hi: date) -> Path:
        name = f"{lo:%Y-%m-%d}" if lo == hi else f"{lo:%Y-%m-%d}_{hi:%Y-%m-%d}"
        return self.kind_dir(kind) / f"{lo:%Y}" / f"{lo:%m}" / f"{name}.parquet"

    def _month_dir(self, kind: str, year: int, month: int) -> Path:
        return self.kind_dir(kind) / f"{year:04d}" / f"{month:02d}"

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

    def _all_files(self, kind: str) -> list[tuple[Span, Path]]:
        base = self.kind_dir(kind)
        if not base.exists():
            return []
        out = []
        for path in base.glob("**/*.parquet"):
            span = span_of(path)
            if span is not None:
                out.append((span, path))
        return out

    def _month_files(self, kind: str, year: int, month: int) -> list[tuple[Span, Path]]:
        """Live files of one month (this layout's folder and an earlier version's month file)."""
        found = []
        folder = self._month_dir(kind, year, month)
        if folder.exists():
            found = [(s, p) for p in folder.iterdir() if (s := span_of(p)) is not None]
        legacy = self.kind_dir(kind) / f"{year:04d}" / f"{year:04d}-{month:02d}.parquet"
        if kind == "day" and legacy.exists():
            found.append((span_of(legacy), legacy))  # type: ignore[arg-type]
        return _live(found)[0]

    def spans(
        self, kind: str, start: date | None = None, end: date | None = None
    ) -> list[tuple[Span, Path]]:
        """Live partition files (with their spans) that may hold ``start..end``, in time order."""
        live, _ = _live(self._all_files(kind))
        return [
            (span, path) for span, path in live
            if (start is None or span[1] >= start) and (end is None or span[0] <= end)
        ]

    def partitions(
        self, kind: str, start: date | None = None, end: date | None = None
    ) -> list[Path]:
        """Live partition files of ``kind`` that may hold bars from ``start`` to ``end``.

        In time order (each file's rows are sorted by ticker and ts, so reading them in this
        order gives every ticker's bars in time order). Pruning is by file name alone: nothing
        outside the range is opened.
        """
        return [path for _, path in self.spans(kind, start, end)]

    def file_of(self, kind: str, day: date) -> Path | None:
        """The live file whose span holds ``day`` (None when no file does)."""
        found = self.spans(kind, day, day)
        return found[0][1] if found else None

    # --- reading -----------------------------------------------------------------------------

    def scan(self, kind: str, start: date | None = None, end: date | None = None) -> pl.LazyFrame:
        """A lazy frame over the partitions that may hold ``start..end`` (not yet filtered)."""
        files = self.partitions(kind, start, end)
        if not files:
            return pl.LazyFrame(schema=STORE_SCHEMA)
        return pl.scan_parquet(files, schema=STORE_SCHEMA)

    def dates(self, kind: str) -> list[date]:
        """Every session date that has bars of ``kind`` in the store, ascending."""
        single: list[date] = []
        wider: list[Path] = []
        for (lo, hi), path in self.spans(kind):
            # A one-session file is only ever written with rows of its session.
            if lo == hi and not _is_legacy(path):
                single.append(lo)
            else:
                wider.append(path)
        # A damaged wider file (a power loss without data.fsync) holds no date it can show.
        wider = [path for path in wider if parquet_intact(path)]
        if wider:
            frame = (pl.scan_parquet(wider, schema=STORE_SCHEMA).select(pl.col("date").unique())
                     .collect())
            single.extend(frame.get_column("date").to_list())
        return sorted(set(single))

    def readable_dates(self, kind: str, days: Iterable[date]) -> set[date]:
        """Those of ``days`` whose bars the store holds in an intact file.

        A date is missing when no file holds it, when its file is damaged (empty or torn by a
        power loss without ``data.fsync``: see :func:`parquet_intact`), or when a compacted
        file spans it without rows of it. The import asks this before it skips a flat file as
        unchanged, so importing the same files again repairs what a power loss broke.
        """
        wanted = sorted(set(days))
        if not wanted:
            return set()
        found: set[date] = set()
        checked: dict[Path, set[date] | None] = {}
        spans = self.spans(kind, wanted[0], wanted[-1])
        for day in wanted:
            path = next((p for (lo, hi), p in spans if lo <= day <= hi), None)
            if path is None:
                continue
            if path not in checked:
                held: set[date] | None = None
                if parquet_intact(path):
                    span = span_of(path)
                    if span is not None and span[0] == span[1] and not _is_legacy(path):
                        held = {span[0]}
                    else:
                        held = set(pl.read_parquet(path, columns=["date"])
                                   .get_column("date").unique().to_list())
                checked[path] = held
            if day in (checked[path] or ()):
                found.add(day)
        return found

    def has_date(self, kind: str, day: date) -> bool:
        """True when the store has bars of ``kind`` for ``day``."""
        path = self.file_of(kind, day)
        if path is None:
            return False
        span = span_of(path)
        if span == (day, day) and not _is_legacy(path):
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
                self._remove_leftovers()
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _remove_leftovers(self) -> None:
        # Temp files of a crash, and files superseded by a compaction; anything recent may be in
        # use (a writer that does not lock, a reader that listed the files a moment ago).
        cutoff = time.time() - _STALE_TMP_S
        for kind in KINDS:
            base = self.root / kind
            if not base.exists():
                continue
            for tmp in base.glob("**/.*.tmp"):
                with contextlib.suppress(OSError):
                    if tmp.stat().st_mtime < cutoff:
                        tmp.unlink()
        live, superseded = _live(self._all_files("day"))
        for old in superseded:
            span = span_of(old)
            cover = next((p for s, p in live if span and s[0] <= span[0] and span[1] <= s[1]),
                         None)
            with contextlib.suppress(OSError):
                if cover is not None and cover.stat().st_mtime < cutoff:
                    old.unlink()

    def replace_dates(
        self, kind: str, bars: pl.DataFrame, *, presorted: bool = False
    ) -> list[Path]:
        """Make the store's bars of each date in ``bars`` exactly ``bars``' rows of that date.

        ``bars`` has :data:`STORE_SCHEMA` columns. Dates not in ``bars`` are left alone. With
        ``presorted``, each date's rows are already sorted by (ticker, ts), as the importer's
        are, and are not checked again. Returns the partition files written.
        """
        _check_kind(kind)
        if bars.is_empty():
            return []
        if bars.columns != list(STORE_SCHEMA) or bars.dtypes != list(STORE_SCHEMA.values()):
            bars = bars.select(list(STORE_SCHEMA)).cast(STORE_SCHEMA)  # type: ignore[arg-type]
        lo, hi = bars.get_column("date").min(), bars.get_column("date").max()
        if not isinstance(lo, date) or not isinstance(hi, date):
            raise DataError("bars without a date cannot be stored")
        if lo == hi:
            groups = [(lo, [lo], bars)]
        elif kind == "day" and _month_key(lo) == _month_key(hi):
            # A batch of one month's day files (the usual backlog): no need to split it.
            days = sorted(bars.get_column("date").unique().to_list())
            groups = [(lo, days, bars)]
        else:
            key = (pl.col("date").dt.strftime("%Y-%m") if kind == "day"
                   else pl.col("date").dt.strftime("%Y-%m-%d"))
            parts = bars.with_columns(key.alias("_part")).partition_by("_part", as_dict=True)
            groups = []
            for _, group in sorted(parts.items(), key=lambda kv: str(kv[0])):
                days = sorted(group.get_column("date").unique().to_list())
                groups.append((days[0], days, group.drop("_part")))
        if kind == "minute":
            # One session per file: a new file replaces the old one whole.
            written = []
            for day, _, group in groups:
                path = self.partition_path(kind, day)
                self._write(path, group if presorted else _sorted(group), kind)
                written.append(path)
            return written
        written = []
        months = set()
        for first, days, group in groups:
            months.add(_month_key(first))
            written.append(self._write_month(first.year, first.month, days, group, presorted))
        for year, month in sorted(months):
            # A month is compacted once it is over: the store now has a later month.
            prev = (year, month - 1) if month > 1 else (year - 1, 12)
            if len(self._month_files("day", *prev)) > 1:
                written.append(self.compact("day", *prev))
        return written

    def _write_month(
        self, year: int, month: int, days: list[date], group: pl.DataFrame, presorted: bool
    ) -> Path:
        live = self._month_files("day", year, month)
        day = days[0]
        inside = any(
            s[0] <= day <= s[1] and (s[0] != s[1] or _is_legacy(p)) for s, p in live
        )
        if len(days) == 1 and not inside:
            path = self.partition_path("day", day)
            self._write(path, group if presorted else _sorted(group), "day", staging=True)
            if len(live) + (0 if any(p == path for _, p in live) else 1) > MAX_FILES_PER_MONTH:
                return self.compact("day", year, month)
            return path
        return self.compact("day", year, month, group, days)

    def compact(
        self, kind: str, year: int, month: int,
        new: pl.DataFrame | None = None, days: Iterable[date] = (),
    ) -> Path:
        """Rewrite a month of day bars as one file, replacing ``days`` with ``new``'s rows.

        The new file spans every file it folds in (so they are superseded, not duplicated).
        """
        if kind != "day":
            raise DataError("only day bars are compacted (minute files hold one session)")
        live = self._month_files(kind, year, month)
        replaced = sorted(set(days))
        # A damaged file (a power loss without data.fsync) is dropped: the new file spans its
        # dates without their rows, and re-importing their flat files brings them back.
        old = [pl.read_parquet(p) for _, p in live if parquet_intact(p)]
        if old and replaced:
            old = [f.filter(~pl.col("date").is_in(replaced)) for f in old]
        blocks = [f for f in old if not f.is_empty()]
        if new is not None and not new.is_empty():
            new = new.select(list(STORE_SCHEMA)).cast(STORE_SCHEMA)  # type: ignore[arg-type]
            # One block per session: each comes from one sorted file (or a sorted multi-day one).
            blocks.extend(new.partition_by("date", maintain_order=True))
        bounds = [d for s, _ in live for d in s] + replaced
        if not bounds:
            raise DataError(f"nothing to compact in {year:04d}-{month:02d}")
        path = self._span_path(kind, min(bounds), max(bounds))
        self._write(path, _merge_sorted(blocks), kind)
        for _, p in live:
            if _is_legacy(p) and p != path:
                # An earlier version's month file spans the same month: a tie that readers
                # break in favour of the new file, but no reason to keep it.
                p.unlink(missing_ok=True)
        return path

    def _write(self, path: Path, frame: pl.DataFrame, kind: str, *, staging: bool = False) -> None:
        # zstd level 1: nearly the size of the default level at a fraction of its time. A
        # staging file (one session of day bars: at most MAX_FILES_PER_MONTH of them, until
        # the month's compaction rewrites them) is not compressed: about half the cost of
        # writing it, for about twice its size meanwhile (the upper levels of an LSM tree,
        # RocksDB's for one, make the same trade). Row groups small enough that a few tickers'
        # reads skip most of a file.
        row_group = 65_536 if kind == "day" else 131_072
        codec: Literal["zstd", "uncompressed"] = "uncompressed" if staging else "zstd"

        def write(tmp: Path) -> None:
            frame.write_parquet(
                tmp, compression=codec, compression_level=None if staging else 1,
                statistics=True, row_group_size=row_group,
            )

        atomic_write(path, write, fsync=self.fsync)

    def delete_dates(self, kind: str, days: Iterable[date]) -> None:
        """Remove the bars of ``days`` (used by tests and by re-imports that found no rows)."""
        for day in sorted(set(days)):
            found = self.spans(kind, day, day)
            if not found:
                continue
            (lo, hi), path = found[0]
            if lo == hi and not _is_legacy(path):
                path.unlink()
                continue
            # A compacted file keeps its span (it stays the truth about those sessions) and
            # loses the day's rows.
            rest = pl.read_parquet(path).filter(pl.col("date") != day)
            self._write(path, rest, kind)

    def write_rejects(self, kind: str, stem: str, rejected: pl.DataFrame | None) -> Path | None:
        """Write (or, with nothing rejected, remove) the quarantine file of source ``stem``."""
        path = self.rejects_path(kind, stem)
        if rejected is None or rejected.is_empty():
            path.unlink(missing_ok=True)
            return None
        frame = rejected.drop("date", strict=False)
        atomic_write(path, lambda tmp: frame.write_csv(tmp), fsync=self.fsync)
        return path


def _merge_sorted(blocks: list[pl.DataFrame]) -> pl.DataFrame:
    """``blocks`` as one frame sorted by (ticker, ts).

    When the blocks cover disjoint date ranges and each is sorted, putting them in time order
    and sorting by ticker alone with a stable sort gives that order, at well under half the cost
    of a two-key sort (most of a compaction's time otherwise).
    """
    if not blocks:
        return pl.DataFrame(schema=STORE_SCHEMA)
    ranged: list[tuple[date, date, pl.DataFrame]] = []
    for f in blocks:
        lo, hi = f.get_column("date").min(), f.get_column("date").max()
        if not isinstance(lo, date) or not isinstance(hi, date):  # pragma: no cover - no nulls
            return pl.concat(blocks, how="vertical").sort(["ticker", "ts"])
        ranged.append((lo, hi, f))
    ranged.sort(key=lambda r: r[0])
    frames = [f for _, _, f in ranged]
    disjoint = all(a[1] < b[0] for a, b in itertools.pairwise(ranged))
    if disjoint and all(_sorted_by_ticker_ts(f) for f in frames):
        return pl.concat(frames, how="vertical").sort("ticker", maintain_order=True)
    return pl.concat(frames, how="vertical").sort(["ticker", "ts"])


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame if _sorted_by_ticker_ts(frame) else frame.sort(["ticker", "ts"])


def _sorted_by_ticker_ts(frame: pl.DataFrame) -> bool:
    return strictly_sorted(frame.get_column("ticker"), frame.get_column("ts"))


__all__ = ["BAR_COLUMNS", "MAX_FILES_PER_MONTH", "STORE_SCHEMA", "Store", "atomic_write",
           "parquet_intact", "span_of"]
