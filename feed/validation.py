"""What makes one table valid: canonical dtypes, required values, per-type rules, unique keys.

`validate_table` turns the cells of one file (as read by `feed.io`) into a canonical frame or raises a
`DataError` naming the file, the 1-based data row, the column and the bad value. Everything is vectorized:
no per-row Python on the happy path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import (
    is_bool_dtype, is_datetime64_dtype, is_integer_dtype, is_numeric_dtype, is_object_dtype, is_string_dtype,
)

from feed.errors import DataError
from feed.schema import COLUMNS, EVENT_TYPES, PRIMARY_KEYS

STR_DTYPE = "str"  # pandas' default string dtype (pyarrow-backed; missing values are NaN)
TS_DTYPE = "datetime64[ms, UTC]"
TRUE_WORDS: tuple[str, ...] = ("true", "1", "yes")
FALSE_WORDS: tuple[str, ...] = ("false", "0", "no")
# A blank or absent in_stock means in stock: a catalog without stock data must not hide every product.
BOOL_DEFAULT = True
# A missing event_id is a hash of the whole row but the id (extra columns excluded, so adding one keeps ids).
EVENT_ID_SOURCE: tuple[str, ...] = tuple(c.name for c in COLUMNS["events"] if c.name != "event_id")
TS_EXPECTED = "an ISO-8601 time such as '2024-05-01T12:30:00Z' (no zone means UTC) or epoch milliseconds"
_MAX_EPOCH_MS = 2.0**53  # float64 holds every millisecond below this (year ~285,000)


@dataclass(frozen=True)
class TableFile:
    """The file being checked and the table it holds, for error messages."""

    path: Path
    table: str

    def error(self, message: str, row: int | None = None, column: str | None = None) -> DataError:
        """A DataError located in this file."""
        return DataError(message, path=str(self.path), row=row, column=column)


def reject(src: TableFile, bad: object, column: str, problem: str, expected: str,
           values: pd.Series | None = None) -> None:
    """Raise for the first row flagged in `bad`, quoting its value for '{value}' and counting the others."""
    mask = bad.to_numpy(dtype=bool, na_value=False) if isinstance(bad, pd.Series) else np.asarray(bad, bool)
    if not mask.any():
        return
    first, more = int(mask.argmax()), int(mask.sum()) - 1
    value = None if values is None else values.iloc[first]
    shown = problem.replace("{value}", repr(value.item() if isinstance(value, np.generic) else value))
    line = f" (CSV line {first + 2})" if src.path.suffix == ".csv" else ""
    tail = f" (and {more} more row{'' if more == 1 else 's'})" if more else ""
    raise src.error(f"{shown}{line}; expected {expected}{tail}", row=first + 1, column=column)


def validate_table(src: TableFile, raw: pd.DataFrame) -> pd.DataFrame:
    """The table's cells as read from `src` → a validated frame in canonical dtypes (or a DataError)."""
    _check_header(src, raw)
    frame = _normalize(src, raw)
    if src.table == "events":
        frame["event_id"] = _fill_event_ids(frame)
        _check_events(src, frame, raw)
    _check_bounds(src, frame, raw)
    _check_unique_key(src, frame)
    return frame


def derive_event_ids(events: pd.DataFrame) -> pd.Series:
    """Content-hash ids ('h' + 16 hex digits) for canonical event rows; identical rows get '-1', '-2'…"""
    hashes = pd.util.hash_pandas_object(events[list(EVENT_ID_SOURCE)], index=False)  # (n,) uint64
    ids = pd.Series(_hex_ids(hashes.to_numpy()), index=events.index, dtype=STR_DTYPE)
    if not hashes.duplicated().any():
        return ids
    nth = hashes.groupby(hashes.to_numpy()).cumcount()  # 0 for the first row with a given content
    return ids.where(nth == 0, ids + "-" + nth.astype(STR_DTYPE))


# --- converting columns -----------------------------------------------------------------------------------


def _check_header(src: TableFile, raw: pd.DataFrame) -> None:
    """Every required column must be present (and column names unique)."""
    names = [str(name) for name in raw.columns]
    twice = [name for name in names if names.count(name) > 1]
    if twice:
        raise src.error(f"column {twice[0]!r} appears twice; expected unique column names", column=twice[0])
    required = [c.name for c in COLUMNS[src.table] if c.required]
    for name in (n for n in required if n not in raw.columns):
        raise src.error(f"missing required column {name!r}; expected columns {', '.join(required)} "
                        f"(found: {', '.join(names) or 'none'})", column=name)


def _normalize(src: TableFile, raw: pd.DataFrame) -> pd.DataFrame:
    """Schema columns in canonical dtypes and schema order (absent ones as NA), then the extra columns."""
    data = {c.name: _CONVERTERS[c.kind](src, raw[c.name], c.name) if c.name in raw.columns
            else _absent(c.kind, len(raw)) for c in COLUMNS[src.table]}
    data |= {name: raw[name] for name in raw.columns if name not in data}
    frame = pd.DataFrame(data, index=pd.RangeIndex(len(raw)))
    for column in (c.name for c in COLUMNS[src.table] if c.required):
        reject(src, frame[column].isna(), column, f"blank {column}",
                f"a value on every row ({column} is required)")
    return frame


def _absent(kind: str, n: int) -> pd.Series:
    """A column the file does not have: all NA (in_stock: all BOOL_DEFAULT)."""
    if kind == "bool":
        return pd.Series(np.full(n, BOOL_DEFAULT))
    if kind == "ts":
        return pd.Series(np.full(n, np.datetime64("NaT", "ms"))).dt.tz_localize("UTC")
    if kind == "str":
        return pd.Series(index=pd.RangeIndex(n), dtype=STR_DTYPE)
    return pd.Series(np.full(n, np.nan))


def _textual(s: pd.Series) -> bool:
    """True for text-like columns (strings, objects, categoricals)."""
    return is_string_dtype(s.dtype) or is_object_dtype(s.dtype) or isinstance(s.dtype, pd.CategoricalDtype)


def _text(s: pd.Series) -> pd.Series:
    """The column as pandas str with empty strings as NA."""
    s = s.astype(STR_DTYPE)
    return s.where(s != "")


def _as_str(src: TableFile, s: pd.Series, name: str) -> pd.Series:
    """Ids and labels: text or integers become str; anything else is an error."""
    if _textual(s) or is_integer_dtype(s.dtype) or s.isna().all():
        return _text(s)
    raise src.error(f"found a {s.dtype} column; expected text (ids and labels are strings)", column=name)


def _as_ts(src: TableFile, s: pd.Series, name: str) -> pd.Series:
    """Datetimes, epoch-ms numbers or ISO-8601 / epoch-ms text as datetime64[ms, UTC]; naive means UTC."""
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        shown, out = s, s.dt.tz_convert("UTC")
    elif is_datetime64_dtype(s.dtype):
        shown, out = s, s.dt.tz_localize("UTC")
    elif is_numeric_dtype(s.dtype) and not is_bool_dtype(s.dtype):
        shown, out = s, _epoch_ms(s)
    elif _textual(s):
        shown = _text(s)
        out = _parse_ts_text(shown)
    else:
        raise src.error(f"found a {s.dtype} column; expected {TS_EXPECTED}", column=name)
    reject(src, shown.notna() & out.isna(), name, "unparsable timestamp {value}", TS_EXPECTED, shown)
    return out.dt.as_unit("ms")


def _epoch_ms(s: pd.Series) -> pd.Series:
    """Numbers of milliseconds since 1970-01-01 UTC as datetimes (NaT where missing or out of range)."""
    values = s.to_numpy(dtype="float64", na_value=np.nan)
    ok = np.abs(values) < _MAX_EPOCH_MS  # False for NaN and ±inf
    stamps = np.where(ok, values, 0).astype("int64").astype("datetime64[ms]")
    stamps[~ok] = np.datetime64("NaT")
    return pd.Series(stamps, index=s.index).dt.tz_localize("UTC")


def _parse_ts_text(text: pd.Series) -> pd.Series:
    """Digit-only strings are epoch milliseconds; everything else is parsed as ISO-8601."""
    digits = text.str.isdigit().to_numpy(dtype=bool, na_value=False)
    out = pd.to_datetime(text.where(~digits), format="ISO8601", utc=True, errors="coerce").dt.as_unit("ms")
    if digits.any():
        out = out.where(~digits, _epoch_ms(pd.to_numeric(text.where(digits), errors="coerce")))
    return out


def _as_float(src: TableFile, s: pd.Series, name: str) -> pd.Series:
    """Numbers (or numeric text) as float64; anything unparsable or infinite is an error."""
    if is_bool_dtype(s.dtype) or not (is_numeric_dtype(s.dtype) or _textual(s)):
        raise src.error(f"found a {s.dtype} column; expected numbers", column=name)
    shown = _text(s) if _textual(s) else s
    out = (pd.to_numeric(shown, errors="coerce") if _textual(s) else s).astype("float64")
    reject(src, shown.notna() & ~np.isfinite(out), name, "not a number: {value}",
            "a finite number such as 1500 or 12.5", shown)
    return out


def _as_bool(src: TableFile, s: pd.Series, name: str) -> pd.Series:
    """Flags from booleans or true/false/1/0/yes/no in any case; blank means BOOL_DEFAULT."""
    if s.dtype == np.bool_:
        return s
    words = _text(s).str.strip().str.lower()
    true, false = words.isin(TRUE_WORDS).to_numpy(), words.isin(FALSE_WORDS).to_numpy()
    reject(src, words.notna().to_numpy() & ~true & ~false, name, "not a true/false flag: {value}",
            f"one of {'/'.join(TRUE_WORDS + FALSE_WORDS)} (blank means {str(BOOL_DEFAULT).lower()})", _text(s))
    return pd.Series(np.where(words.isna().to_numpy(), BOOL_DEFAULT, true), index=s.index)


_CONVERTERS = {"str": _as_str, "ts": _as_ts, "int": _as_float, "float": _as_float, "bool": _as_bool}


# --- table checks -----------------------------------------------------------------------------------------


def _shown(raw: pd.DataFrame, column: str) -> pd.Series | None:
    """The column as the file holds it, for quoting bad values (None if the file lacks it)."""
    return raw[column] if column in raw.columns else None


def _fill_event_ids(events: pd.DataFrame) -> pd.Series:
    """event_id as given, with derived content-hash ids where it is blank or absent."""
    missing = events["event_id"].isna()
    if not missing.any():
        return events["event_id"]
    return events["event_id"].fillna(derive_event_ids(events[missing]))


def _hex_ids(hashes: np.ndarray) -> np.ndarray:
    """'h' + 16 lowercase hex digits per uint64, built with array ops rather than per-row formatting."""
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    octets = hashes.astype(">u8").view(np.uint8).reshape(-1, 8)  # (n, 8) big-endian bytes
    chars = np.empty((len(octets), 17), dtype=np.uint8)  # (n, 17) ASCII codes
    chars[:, 0] = ord("h")
    chars[:, 1::2], chars[:, 2::2] = digits[octets >> 4], digits[octets & 15]
    return chars.view("S17").ravel().astype("U17")


def _check_events(src: TableFile, frame: pd.DataFrame, raw: pd.DataFrame) -> None:
    """Known event types, order ids on purchases and refunds, amounts, share ids on shares."""
    event = frame["event"]
    reject(src, ~event.isin(EVENT_TYPES), "event", "unknown event type {value}",
            f"one of {', '.join(EVENT_TYPES)}", event)
    paid = event.isin(("purchase", "refund")).to_numpy()
    reject(src, paid & frame["order_id"].isna(), "order_id", "{value} without an order_id",
            "an order_id on every purchase and refund", event)
    _check_amounts(src, frame, raw)
    reject(src, (event == "share") & frame["share_id"].isna(), "share_id", "share without a share_id",
            "every share to carry the id of the share link it created")


def _check_amounts(src: TableFile, frame: pd.DataFrame, raw: pd.DataFrame) -> None:
    """A purchase has a positive amount; a refund's amount, when given, is >= 0."""
    event, amount, shown = frame["event"], frame["amount"], _shown(raw, "amount")
    purchase = (event == "purchase").to_numpy()
    reject(src, purchase & amount.isna(), "amount", "purchase without an amount",
            "the price paid (> 0) on every purchase")
    reject(src, purchase & (amount <= 0), "amount", "purchase amount {value} is not positive",
            "the price paid, > 0", shown)
    reject(src, (event == "refund") & (amount < 0), "amount", "negative refund amount {value}",
            "a refunded amount >= 0, or blank", shown)


# Numeric columns with a valid range: (low, high), inclusive; None means unbounded.
_BOUNDS: dict[str, dict[str, tuple[float, float | None]]] = {
    "events": {"watch_ms": (0, None)}, "videos": {"duration_ms": (0, None)},
    "products": {"price": (0, None), "commission_rate": (0, 1)}, "follows": {},
}


def _check_bounds(src: TableFile, frame: pd.DataFrame, raw: pd.DataFrame) -> None:
    """Durations and prices are >= 0; commission rates are fractions in [0, 1]."""
    for column, (low, high) in _BOUNDS[src.table].items():
        if high is None:
            reject(src, frame[column] < low, column, f"negative {column} {{value}}", f"{column} >= {low}",
                    _shown(raw, column))
        else:
            reject(src, (frame[column] < low) | (frame[column] > high), column,
                    f"{column} {{value}} is outside [{low}, {high}]", f"a fraction from {low} to {high}",
                    _shown(raw, column))


def _check_unique_key(src: TableFile, frame: pd.DataFrame) -> None:
    """The table's primary key (if it has one) appears once per row."""
    if (key := PRIMARY_KEYS.get(src.table)) is None:
        return
    ids = frame[key]
    repeated = ids.duplicated().to_numpy() & ids.notna().to_numpy()
    if repeated.any():
        first_row = int((ids == ids.iloc[int(repeated.argmax())]).to_numpy().argmax()) + 1
        reject(src, repeated, key, f"duplicate {key} {{value}} (first on row {first_row})",
                f"each {key} to appear once", ids)
