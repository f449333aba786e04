"""Pure conversions between canonical frames (`feed.schema` dtypes) and database rows.

The database keeps times as epoch-millisecond integers, `watch_ms`/`duration_ms` as integers, flags as
integers 0/1 when read (selects cast them), and missing values as NULL; in memory every table has the
canonical dtypes that `feed.io.read_table` produces. Both directions go column-wise through Arrow, which
turns a million fetched rows into a frame without a Python loop per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from feed.schema import COLUMNS, Column
from feed.validation import BOOL_DEFAULT

__all__ = ["IMPRESSION_COLUMNS", "TABLE_COLUMNS", "from_epoch_ms", "from_rows", "impression_rows", "row_type",
           "to_epoch_ms", "to_rows", "with_schema_columns"]

# The dataset contract's tables, plus those only the store keeps: a block has the columns of a follow.
TABLE_COLUMNS: dict[str, tuple[Column, ...]] = {**COLUMNS, "blocks": COLUMNS["follows"]}
IMPRESSION_COLUMNS = ("request_id", "user_id", "position", "video_id", "source", "ts")

# How each kind of schema column comes back from the database (flags are selected as integers).
_DB_TYPES: dict[str, pa.DataType] = {"str": pa.string(), "ts": pa.int64(), "int": pa.int64(),
                                     "float": pa.float64(), "bool": pa.int64()}
_TS_TYPE = pa.timestamp("ms", tz="UTC")  # → datetime64[ms, UTC] in pandas


def to_epoch_ms(values: pd.Series) -> list[int | None]:
    """Timestamps (tz-aware, or naive meaning UTC) → epoch milliseconds, None for NaT (finer digits dropped)."""
    ts = pd.to_datetime(values, utc=True)
    missing = ts.isna().to_numpy()
    ms = ts.dt.tz_convert(None).to_numpy(dtype="datetime64[ms]").astype(np.int64)  # (n,) NaT → int64 min
    return pa.array(ms, mask=missing).to_pylist()


def from_epoch_ms(values: Sequence[int | None]) -> pd.Series:
    """Epoch milliseconds (None for missing) → a `datetime64[ms, UTC]` series."""
    return pd.Series(_ts(pa.array(values, type=pa.int64())).to_pandas())


def row_type(columns: Sequence[Column]) -> pa.StructType:
    """The Arrow type of one fetched row of these columns."""
    return pa.struct([(c.name, _DB_TYPES[c.kind]) for c in columns])


def from_rows(table: str, chunks: Iterable[Sequence[tuple]], extra: Sequence[Column] = ()) -> pd.DataFrame:
    """Fetched row tuples (the table's schema columns in order, then `extra`) → a canonical frame."""
    columns = [*TABLE_COLUMNS[table], *extra]
    kind = row_type(columns)
    rows = pa.chunked_array([pa.array(chunk, type=kind) for chunk in chunks] or [pa.array([], type=kind)])
    data = pa.Table.from_struct_array(rows)
    return pa.table({c.name: _canonical(data.column(c.name), c) for c in columns}).to_pandas()


def to_rows(frame: pd.DataFrame, table: str, **constant: object) -> tuple[list[str], list[tuple]]:
    """Canonical frame → (column names, one tuple per row) for the driver: schema columns, then `constant`."""
    frame = with_schema_columns(frame, table)
    names = [c.name for c in TABLE_COLUMNS[table]] + list(constant)
    columns = [_column_to_db(frame, table, c) for c in TABLE_COLUMNS[table]]
    columns += [[value] * len(frame) for value in constant.values()]
    return names, list(zip(*columns, strict=True))


def with_schema_columns(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """The frame's schema columns in schema order, absent ones added as missing (in_stock: BOOL_DEFAULT)."""
    absent = [c for c in TABLE_COLUMNS[table] if c.name not in frame.columns]
    if not absent:
        return frame[[c.name for c in TABLE_COLUMNS[table]]]
    filled = from_rows(table, [[(None,) * len(TABLE_COLUMNS[table])] * len(frame)]).set_axis(frame.index)
    return pd.DataFrame({c.name: filled[c.name] if c in absent else frame[c.name] for c in TABLE_COLUMNS[table]})


def impression_rows(rows: pd.DataFrame) -> list[tuple]:
    """Driver rows for the impressions table, in IMPRESSION_COLUMNS order (times as epoch ms)."""
    absent = [c for c in IMPRESSION_COLUMNS if c not in rows.columns]
    if absent:
        raise ValueError(f"impressions frame lacks column(s) {', '.join(absent)}; expected "
                         f"{', '.join(IMPRESSION_COLUMNS)}")
    try:
        columns = [pa.array(rows[c], type=pa.int64() if c == "position" else pa.string(), from_pandas=True
                            ).to_pylist() for c in IMPRESSION_COLUMNS[:-1]]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"impressions frame: {exc}; expected text ids, an integer position") from exc
    return list(zip(*columns, to_epoch_ms(rows["ts"]), strict=True))


def _canonical(values: pa.ChunkedArray, column: Column) -> pa.ChunkedArray:
    """A fetched column in the Arrow type whose pandas conversion is the canonical dtype."""
    if column.kind == "ts":
        return _ts(values)
    if column.kind == "int":
        return values.cast(pa.float64())  # canonical milliseconds are float64 with NaN for missing
    if column.kind == "bool":
        return values.cast(pa.bool_()).fill_null(BOOL_DEFAULT)
    return values


def _ts(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Epoch-ms integers as UTC millisecond timestamps."""
    return values.cast(_TS_TYPE)


def _column_to_db(frame: pd.DataFrame, table: str, column: Column) -> list[object]:
    """One column of the frame for the driver, or a ValueError naming the column."""
    try:
        return _to_db(frame[column.name], column)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"{table} column {column.name!r} is not in its canonical dtype ({exc}); expected "
                         f"{column.kind} values as feed.io loads them") from exc


def _to_db(s: pd.Series, column: Column) -> list[object]:
    """One canonical column → Python values for the driver (None for missing)."""
    if column.kind == "ts":
        return to_epoch_ms(s)
    if column.kind == "bool":
        return pa.array(s, type=pa.bool_(), from_pandas=True).fill_null(BOOL_DEFAULT).to_pylist()
    if column.kind == "int":
        return pa.array(s.round(), type=pa.float64(), from_pandas=True).cast(pa.int64()).to_pylist()
    if column.kind == "float":
        return pa.array(s, type=pa.float64(), from_pandas=True).to_pylist()
    return pa.array(s, type=pa.string(), from_pandas=True).to_pylist()
