"""Reading and checking the text tables every file-based loader is made of.

All loaders funnel their files through here so that a malformed file gives the same kind of
one-line ``DataError`` (file, line, column) whatever dataset it came from, and so that the fast
path — pandas' C parser, then vectorised checks — is written once. The C parser alone is not
enough: it pads a short row with NaN and silently reads "abc" as a string column, which would
turn into a confusing failure far from the file, so rows are counted and columns coerced here.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from hybrid.errors import ConfigError, DataError

#: ``sep`` for whitespace-separated tables (the NCAR CAMELS text files)
WHITESPACE = r"\s+"


def require_dir(data_dir: str | Path | None, dataset: str) -> Path:
    """The dataset root; checked up front so a typo fails before any catchment is scheduled."""
    if data_dir is None:
        raise DataError(f"{dataset}: no data_dir given; set data_dir to the dataset root folder")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{dataset}: data_dir {root} does not exist or is not a folder")
    return root


def open_folder(dataset: Any, data_dir: str | Path | None, options: dict[str, Any],
                allowed: Iterable[str] = ()) -> Path:
    """A folder dataset's start: its options checked, then its root folder."""
    reject_options(options, dataset.name, allowed)
    return require_dir(data_dir, dataset.name)


def reject_options(options: dict[str, Any], dataset: str, allowed: Iterable[str] = ()) -> None:
    """Strict options: a misspelt loader option is an error rather than a silent default."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(
            f"dataset_options.{unknown[0]}: unknown option for dataset {dataset} (known: {known})"
        )


def one_line(exc: BaseException) -> str:
    """Parser messages can span lines; the CLI prints errors as exactly one."""
    return " ".join(str(exc).split())


class Table:
    """A parsed table that can say which file line a row came from, for error messages."""

    def __init__(self, path: Path, frame: pd.DataFrame, body: bytes, first_line: int) -> None:
        self.path = path
        self.frame = frame
        self._body = body
        self._first_line = first_line

    def where(self, row: int) -> str:
        # Only called on the error path, so the line scan costs nothing on good files.
        lines = [n for n, text in _numbered(self._body, self._first_line) if text.strip()]
        if len(lines) == len(self.frame):
            return f"line {lines[row]}"
        return f"data row {row + 1}"


def read_table(
    path: Path,
    *,
    sep: str = ",",
    skiprows: int = 0,
    names: Sequence[str] | None = None,
    dtype: dict[str, Any] | None = None,
) -> Table:
    """Parse a delimited text file with the C engine, then check that no row was short."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror})") from None
    n_header = skiprows + (0 if names else 1)
    parts = raw.split(b"\n", n_header)
    if len(parts) < n_header:
        raise DataError(f"{path}: file ends before its header (expected {n_header} lines)")
    body = parts[n_header] if len(parts) > n_header else b""
    expected = len(names) if names else _n_fields(parts[skiprows], sep)
    try:
        frame = pd.read_csv(
            io.BytesIO(raw),
            sep=sep,
            skiprows=skiprows,
            header=None if names else 0,
            names=list(names) if names else None,
            dtype=dtype,
            engine="c",
        )
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        _check_fields(path, body, n_header + 1, expected, sep)
        raise DataError(f"{path}: {one_line(exc)}") from None
    if sep == ",":
        # Quoted cells may hold commas (attribute names); the parser has checked those files.
        ok = b'"' in body or body.count(b",") == (expected - 1) * len(frame)
    else:
        ok = len(body.split()) == expected * len(frame)
    if not ok:  # a short row, which the C parser pads with NaN instead of rejecting
        _check_fields(path, body, n_header + 1, expected, sep)
    return Table(path, frame, body, n_header + 1)


def _numbered(body: bytes, first_line: int) -> Iterator[tuple[int, bytes]]:
    return enumerate(body.splitlines(), start=first_line)


def _n_fields(row: bytes, sep: str) -> int:
    return len(row.split()) if sep == WHITESPACE else row.count(sep.encode()) + 1


def _check_fields(path: Path, body: bytes, first_line: int, expected: int, sep: str) -> None:
    for number, row in _numbered(body, first_line):
        found = _n_fields(row, sep)
        if row.strip() and found != expected:
            raise DataError(f"{path}: line {number} has {found} fields, expected {expected}")


def float_columns(table: Table, columns: Sequence[str]) -> pd.DataFrame:
    """The named columns as float64; a cell that is not a number is an error naming its line."""
    out: dict[str, pd.Series] = {}
    for column in columns:
        values = table.frame[column]
        if not is_numeric_dtype(values) or is_bool_dtype(values):
            text = values.astype("string").str.strip()
            numbers = pd.to_numeric(text, errors="coerce")
            bad = (numbers.isna() & text.notna() & (text != "")).to_numpy()
            if bad.any():
                row = int(bad.argmax())
                raise DataError(
                    f"{table.path}: {table.where(row)}: column {column!r} has non-numeric value "
                    f"{text.iloc[row]!r}"
                )
            values = numbers
        out[column] = values.astype("float64")
    return pd.DataFrame(out, index=table.frame.index)


def daily_index(table: Table, dates: pd.Series, sources: Sequence[str]) -> pd.DatetimeIndex:
    """Check parsed dates (NaT where unparsable) and return them as the ``date`` index."""
    bad = dates.isna().to_numpy()
    if bad.any():
        row = int(bad.argmax())
        shown = "-".join(str(table.frame[c].iloc[row]) for c in sources)
        raise DataError(f"{table.path}: {table.where(row)}: unparsable date {shown!r}")
    index = pd.DatetimeIndex(dates, name="date")
    duplicated = index.duplicated()
    if duplicated.any():
        row = int(duplicated.argmax())
        raise DataError(f"{table.path}: {table.where(row)}: date {index[row].date()} repeats")
    return index


def read_daily_csv(path: Path) -> pd.DataFrame:
    """A CSV with a ``date`` column and numeric columns (Caravan, CAMELS-DE), indexed by date.

    An empty file is a catchment without data, like a file with a header and no rows: both come
    back as an empty table, which ``prepare`` records as a skipped catchment.
    """
    try:
        if path.stat().st_size == 0:
            return pd.DataFrame(index=pd.DatetimeIndex([], name="date"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror})") from None
    table = read_table(path)
    if "date" not in table.frame.columns:
        found = ", ".join(map(str, table.frame.columns[:6]))
        raise DataError(f"{path}: no 'date' column (columns start: {found})")
    text = table.frame["date"].astype("string").str.strip()
    dates = pd.to_datetime(text, format="ISO8601", errors="coerce")
    index = daily_index(table, dates, ["date"])
    data = float_columns(table, [c for c in table.frame.columns if c != "date"])
    data.index = index
    return data if index.is_monotonic_increasing else data.sort_index()


def read_attribute_tables(paths: Sequence[Path], sep: str = ",") -> pd.DataFrame:
    """Merge per-theme attribute tables on ``gauge_id`` (kept as text: leading zeros matter)."""
    frames = []
    for path in paths:
        frame = read_table(path, sep=sep, dtype={"gauge_id": str}).frame
        if "gauge_id" not in frame.columns:
            raise DataError(f"{path}: no 'gauge_id' column")
        frame["gauge_id"] = frame["gauge_id"].str.strip()
        repeated = frame["gauge_id"][frame["gauge_id"].duplicated()]
        if len(repeated):
            raise DataError(f"{path}: gauge_id {repeated.iloc[0]} appears more than once")
        frame = frame.set_index("gauge_id")
        for column in frame.columns:  # e.g. CAMELS-US "    Mixed Forests"
            if not is_numeric_dtype(frame[column]):
                frame[column] = frame[column].str.strip()
        frames.append(frame)
    if not frames:
        raise DataError("no attribute tables given")
    merged = pd.concat(frames, axis=1, join="outer")
    # The same attribute in two tables (e.g. a name column) would make selection ambiguous.
    merged = merged.loc[:, ~merged.columns.duplicated()]
    merged.index.name = "gauge_id"
    return merged.sort_index()


def select_gauges(
    attributes: pd.DataFrame, gauge_ids: Sequence[str] | None, where: str
) -> pd.DataFrame:
    """Rows for ``gauge_ids`` in that order; a catchment without attributes is an error."""
    if gauge_ids is None:
        return attributes
    missing = [g for g in gauge_ids if g not in attributes.index]
    if missing:
        raise DataError(f"catchment {missing[0]}: no attributes in {where}")
    return attributes.loc[list(gauge_ids)]
