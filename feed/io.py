"""Read, validate and write the dataset tables (events, videos, products, follows) as CSV or Parquet.

Every problem raises `DataError` naming the file, the 1-based data row and the column. CSV cells are read as
text and converted by `feed.validation`, so a CSV file and a Parquet file with the same content load to equal
frames. This module handles files and the checks across tables; `feed.validation` the rules within one table.
"""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from feed.errors import DataError
from feed.schema import FILE_SUFFIXES, TABLES, Dataset
from feed.validation import TableFile, derive_event_ids, reject, validate_table

__all__ = ["find_table", "read_table", "load_dataset", "write_table", "write_dataset", "derive_event_ids"]

_FORMATS = {"parquet": ".parquet", "csv": ".csv"}


# --- public API -------------------------------------------------------------------------------------------


def find_table(folder: Path, table: str) -> Path | None:
    """Return folder/<table>.parquet or folder/<table>.csv (None if neither exists; both is a DataError)."""
    _check_table_name(table)
    found = [path for path in (Path(folder) / f"{table}{s}" for s in FILE_SUFFIXES) if path.is_file()]
    if len(found) > 1:
        raise DataError(f"both {found[0].name} and {found[1].name} exist; expected one file per table "
                        f"(delete one of {found[0]} and {found[1]})", path=str(folder))
    return found[0] if found else None


def read_table(path: Path, table: str) -> pd.DataFrame:
    """Read one table file (CSV or Parquet) and return it validated, in the canonical dtypes of `Dataset`."""
    src = TableFile(Path(path), _check_table_name(table))
    return validate_table(src, _read_raw(src))


def load_dataset(folder: Path) -> Dataset:
    """Load every table of a dataset folder (events required, the rest optional) and check references."""
    paths = _table_paths(Path(folder))
    dataset = Dataset(**{table: read_table(path, table) for table, path in paths.items()})
    if dataset.events.empty:
        raise DataError("the events table has no rows; expected at least one event", path=str(paths["events"]))
    _check_references(dataset, paths)
    return dataset


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Write one table atomically (temp file, then rename) as Parquet or CSV, chosen by the file suffix."""
    path = Path(path)
    writer = {".parquet": _write_parquet, ".csv": _write_csv}.get(path.suffix)
    if writer is None:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; expected .parquet or .csv")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        writer(df, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_dataset(dataset: Dataset, folder: Path, fmt: str = "parquet") -> None:
    """Write each table as folder/<table>.<fmt>, then delete other table files there so loads stay exact."""
    if fmt not in _FORMATS:
        raise ValueError(f"unsupported format {fmt!r}; expected one of {', '.join(_FORMATS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        if (frame := getattr(dataset, table)) is not None:
            write_table(frame, folder / f"{table}{_FORMATS[fmt]}")
    _remove_stale_tables(dataset, folder, _FORMATS[fmt])


def _check_table_name(table: str) -> str:
    """The table name itself, if the schema knows it."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    return table


# --- reading files ----------------------------------------------------------------------------------------


def _read_raw(src: TableFile) -> pd.DataFrame:
    """The file's cells as stored (CSV: all text, '' as NA), after the file-level checks."""
    if not src.path.is_file():
        what = "is a directory" if src.path.is_dir() else "does not exist"
        raise src.error(f"file {what}; expected a {src.table} table file (.parquet or .csv)")
    if src.path.suffix not in FILE_SUFFIXES:
        raise src.error(f"unsupported file type {src.path.suffix!r}; expected a .parquet or .csv file")
    if src.path.stat().st_size == 0:
        raise src.error("file is empty; expected a CSV header line or Parquet data")
    return _read_csv(src) if src.path.suffix == ".csv" else _read_parquet(src)


def _read_csv(src: TableFile) -> pd.DataFrame:
    """Every cell as text so that conversions and messages see exactly what the file holds."""
    header = _csv_header(src)
    convert = pa_csv.ConvertOptions(column_types={name: pa.string() for name in header},
                                    strings_can_be_null=True, null_values=[""], quoted_strings_can_be_null=True)
    try:
        table = pa_csv.read_csv(src.path, parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                                convert_options=convert)
    except (pa.ArrowException, OSError) as exc:
        raise _csv_parse_error(src, len(header), exc) from exc
    return table.to_pandas()


def _csv_header(src: TableFile) -> list[str]:
    """The header line's column names, which must be present and unique."""
    try:
        with src.path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise src.error(f"cannot read it as CSV ({exc}); expected UTF-8 text with a header line") from exc
    if not any(header):
        raise src.error("no header line; expected the column names on the first line")
    twice = [name for name in header if header.count(name) > 1]
    if twice:
        raise src.error(f"column {twice[0]!r} appears twice in the header; expected unique names", column=twice[0])
    return header


def _csv_parse_error(src: TableFile, width: int, exc: Exception) -> DataError:
    """Locate a CSV parse failure by rescanning the file (error path only) for the first ragged row."""
    try:
        with src.path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            for row, cells in enumerate(filter(None, reader), start=1):
                if len(cells) != width:
                    return src.error(f"{len(cells)} cells on CSV line {reader.line_num}; expected {width} "
                                     f"like the header", row=row)
    except (UnicodeDecodeError, csv.Error) as err:
        return src.error(f"cannot read it as CSV ({err}); expected UTF-8 comma-separated text")
    return src.error(f"cannot read it as CSV ({exc}); expected UTF-8 comma-separated text")


def _read_parquet(src: TableFile) -> pd.DataFrame:
    """The Parquet table as pandas, with a stored named index turned back into columns."""
    try:
        table = pq.read_table(src.path)
    except (pa.ArrowException, OSError) as exc:
        raise src.error(f"cannot read it as Parquet ({exc}); expected a Parquet file") from exc
    frame = table.to_pandas()
    return frame.reset_index(drop=all(name is None for name in frame.index.names))


# --- dataset level ----------------------------------------------------------------------------------------


def _table_paths(folder: Path) -> dict[str, Path]:
    """The file of every table present in the folder; events must be there."""
    if not folder.is_dir():
        raise DataError("dataset folder not found; expected a folder holding events.parquet or events.csv",
                        path=str(folder))
    paths = {table: path for table in TABLES if (path := find_table(folder, table)) is not None}
    if "events" not in paths:
        raise DataError(f"no events table; expected {folder / 'events.parquet'} or {folder / 'events.csv'} "
                        "(videos, products and follows are optional)", path=str(folder))
    return paths


def _check_references(dataset: Dataset, paths: dict[str, Path]) -> None:
    """Ids that point into another table must exist there (when that table is present)."""
    events = TableFile(paths["events"], "events")
    if dataset.videos is not None:
        known = dataset.events["video_id"].isin(dataset.videos["video_id"])
        reject(events, ~known, "video_id", "video_id {value} is not in the videos table",
                f"every event's video to be listed in {paths['videos']}", dataset.events["video_id"])
    _check_purchase_products(events, dataset, paths.get("videos"))
    if dataset.videos is not None and dataset.products is not None:
        known = dataset.videos["product_id"].isna() | dataset.videos["product_id"].isin(
            dataset.products["product_id"])
        reject(TableFile(paths["videos"], "videos"), ~known, "product_id",
                "product_id {value} is not in the products table",
                f"every video's product to be listed in {paths['products']}", dataset.videos["product_id"])


def _check_purchase_products(src: TableFile, dataset: Dataset, videos_path: Path | None) -> None:
    """A purchase names its product, or its video's catalog entry does."""
    events = dataset.events
    orphan = (events["event"] == "purchase").to_numpy() & events["product_id"].isna().to_numpy()
    if dataset.videos is None:
        reject(src, orphan, "product_id", "purchase without a product_id, and no videos table to look it up",
                "a product_id on every purchase (or a videos table linking each video to its product)")
        return
    linked = dataset.videos.loc[dataset.videos["product_id"].notna(), "video_id"]
    reject(src, orphan & ~events["video_id"].isin(linked).to_numpy(), "product_id",
            "purchase without a product_id, and its video {value} has no product_id in the videos table",
            f"a product_id on the purchase or on its video in {videos_path}", events["video_id"])


# --- writing ----------------------------------------------------------------------------------------------


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Parquet keeps every dtype, so the frame is written as is."""
    frame.to_parquet(path, index=False)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """CSV with ISO-8601 'Z' timestamps, true/false flags, whole numbers without '.0' and blanks for NA."""
    columns = [_csv_column(_arrow_column(frame.iloc[:, i])) for i in range(frame.shape[1])]
    table = pa.Table.from_arrays(columns, names=[str(name) for name in frame.columns])
    pa_csv.write_csv(table, path, write_options=pa_csv.WriteOptions(quoting_style="needed"))


def _arrow_column(s: pd.Series) -> pa.Array:
    """One pandas column as Arrow; tz-aware times go through naive UTC (pyarrow's own path warns in pandas 3.1)."""
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert(None)
    return pa.Array.from_pandas(s)


def _csv_column(column: pa.Array) -> pa.Array:
    """One column in the text form that read_table parses back to the same values."""
    if pa.types.is_timestamp(column.type):
        # naive counts as UTC; '%S' prints the fraction at the column's unit (12:30:00.000 for milliseconds)
        utc = column.cast(pa.timestamp(column.type.unit, "UTC"))
        return pc.strftime(utc, format="%Y-%m-%dT%H:%M:%SZ")
    if pa.types.is_floating(column.type):
        try:
            return column.cast(pa.int64())  # safe cast: only succeeds when every value is a whole number
        except pa.ArrowInvalid:
            return column
    return column


def _remove_stale_tables(dataset: Dataset, folder: Path, suffix: str) -> None:
    """Delete table files the dataset did not just write (other format, or a table it lacks)."""
    for table in TABLES:
        for other in FILE_SUFFIXES:
            path = folder / f"{table}{other}"
            if (other != suffix or getattr(dataset, table) is None) and path.is_file():
                path.unlink()
