"""Import public datasets (MovieLens, Last.fm, Taobao UserBehavior, Beibei/GHCF adjacency lists) as a `Dataset`.

Each importer maps one source format onto the data contract (events, plus a minimal catalog where the source
has one) and checks the tables with the same per-table rules as `feed.io.load_dataset` (`validate_table`), so
`write_dataset(ds, out)` then `load_dataset(out)` gives back equal frames. (In CSV the extra integer columns
`rating` and `weight` come back as text, as every extra CSV column does; Parquet keeps them.)

Ids are strings:
- movielens: `user_id` and `video_id` are the raw ids ("196", "242"). Events only: a videos row needs a
  `creator_id` and MovieLens has none, so `u.item` (titles, genres) is not read.
- lastfm: users are "u<userID>"; each artist is one video and its creator, both "a<artistID>". A creator is a
  user, so artist ids get their own prefix and never collide with the listeners' ids.
- taobao: raw ids; an item is both the video and the product (`video_id` = `product_id` = item), with its
  category in `products`. Taobao names no seller, so there is no videos table (no invented creators).
- adjacency: raw ids, each token read as an integer and written back in decimal ("007" becomes "7").
- `event_id`: the content hash `load_dataset` derives for a row without one (`derive_event_ids`), so one
  source row gets the same id in every import; extra columns (`rating`, `weight`) are not part of the hash.

Values the sources lack, synthesized deterministically:
- lastfm has no times: every event is at `LASTFM_TS` (2011-01-01T00:00:00Z), so split it at random, not by time.
- taobao and adjacency have no prices: every purchase has `amount` 1.0 (one unit), so GMV and earnings computed
  on them count purchases, not money. Every Taobao event carries `product_id` = item (the item is the
  product); adjacency purchases and refunds carry it too.
- order ids: taobao "o<row>" (the 1-based data row: the file line unless the file has empty lines); adjacency
  "o<user>-<item>-<k>", k the 1-based count of that (user, item) pair so far in its file (a refund file gets the
  same ids, so a refund names the order it undoes); adjacency shares get `share_id` "s<user>-<item>-<k>".
- adjacency has no times: a file's events are at `ts` plus one second per step of the funnel order of
  `EVENT_TYPES` (view +1 s … cart +4 s, purchase +5 s), so a time split never puts a cart after its purchase.

Errors in the source are `DataError`s naming the file, the 1-based data row (header and empty lines not
counted; the message gives the file line) and the source column (for adjacency lists: row = line, column
"user" or "item").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from feed.errors import ConfigError, DataError
from feed.schema import EVENT_TYPES, TABLES, Dataset
from feed.splits import parse_date
from feed.validation import TableFile, validate_table

__all__ = ["import_movielens", "import_lastfm", "import_taobao", "import_adjacency", "IMPORTERS", "describe",
           "LASTFM_TS", "ADJACENCY_TS", "UNIT_AMOUNT", "TAOBAO_EVENTS"]

LASTFM_TS = "2011-01-01T00:00:00Z"
ADJACENCY_TS = "2020-01-01T00:00:00Z"
UNIT_AMOUNT = 1.0  # the sources have no prices: a purchase is worth one unit
TAOBAO_EVENTS: dict[str, str] = {"pv": "view", "cart": "cart", "fav": "like", "buy": "purchase"}
MOVIELENS_COLUMNS = ("user", "item", "rating", "ts")
LASTFM_COLUMNS = ("userID", "artistID", "weight")
TAOBAO_COLUMNS = ("user", "item", "category", "behavior", "ts")
_INTEGER = r"-?[0-9]{1,18}"  # fits int64
_MAX_SECONDS = 2**53 // 1000  # epoch milliseconds stay exact in float64 below this


# --- public API -------------------------------------------------------------------------------------------


def import_movielens(path: Path, min_rating: int | None = None) -> Dataset:
    """MovieLens `u.data` (the file or its folder): one `view` per rating (≥ min_rating), `rating` kept."""
    src = _Source(_source_file(path, "u.data", "MovieLens ratings (u.data)"), "\t", MOVIELENS_COLUMNS)
    cells = _read_cells(src)
    _require(src, cells, ("user", "item"))
    events = pd.DataFrame({"ts": _from_seconds(src, cells, "ts"), "user_id": cells["user"],
                           "video_id": cells["item"], "event": "view",
                           "rating": _integers(src, cells, "rating")})
    if min_rating is not None:
        events = events[events["rating"] >= min_rating]
    why = "no ratings" if min_rating is None else f"no ratings >= {min_rating}"
    return Dataset(events=_events(src.path, events, why))


def import_lastfm(path: Path) -> Dataset:
    """Last.fm HetRec `user_artists.dat`: a `view` of artist "a<id>" by user "u<id>", `weight` kept."""
    src = _Source(_source_file(path, "user_artists.dat", "Last.fm user_artists.dat"), "\t", LASTFM_COLUMNS,
                  header=True)
    cells = _read_cells(src)
    _require(src, cells, ("userID", "artistID"))
    artists = "a" + cells["artistID"]
    events = pd.DataFrame({"ts": pd.Timestamp(LASTFM_TS), "user_id": "u" + cells["userID"],
                           "video_id": artists, "event": "view", "weight": _integers(src, cells, "weight")})
    unique = artists.drop_duplicates()  # one video per artist, in order of first appearance
    videos = pd.DataFrame({"video_id": unique, "creator_id": unique})
    return Dataset(events=_events(src.path, events), videos=_validated(src.path, "videos", videos))


def import_taobao(path: Path) -> Dataset:
    """Taobao UserBehavior CSV (`user,item,category,behavior,ts`): events on items, plus a products table."""
    src = _Source(_source_file(path, "UserBehavior*.csv", "a Taobao UserBehavior CSV"), ",", TAOBAO_COLUMNS)
    cells = _read_cells(src)
    _require(src, cells, ("user", "item", "behavior"))
    event = cells["behavior"].map(TAOBAO_EVENTS)
    _reject(src, event.isna().to_numpy(), "behavior", "unknown behavior {value}",
            f"one of {', '.join(TAOBAO_EVENTS)}", cells["behavior"])
    bought = (event == "purchase").to_numpy()
    rows = pd.Series(np.arange(1, len(cells) + 1)).astype("str")
    events = pd.DataFrame({"ts": _from_seconds(src, cells, "ts"), "user_id": cells["user"],
                           "video_id": cells["item"], "event": event, "order_id": ("o" + rows).where(bought),
                           "amount": np.where(bought, UNIT_AMOUNT, np.nan),
                           "product_id": cells["item"]})  # the item is the product on every event
    # one product per item; should an item carry two categories, the first row's wins
    products = cells.drop_duplicates("item")[["item", "category"]].rename(columns={"item": "product_id"})
    products["price"] = np.nan
    return Dataset(events=_events(src.path, events), products=_validated(src.path, "products", products))


def import_adjacency(files: Mapping[str, Path], ts: str = ADJACENCY_TS) -> Dataset:
    """Beibei/GHCF adjacency lists (`user item item …` per line), one event type per file."""
    start = _start_time(ts)
    _check_event_types(files)
    frames = [_adjacency_events(Path(path), event, start) for event, path in files.items()]
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        raise DataError(f"no (user, item) pairs in {', '.join(str(p) for p in files.values())}; "
                        "expected lines 'user item item …'", path=str(next(iter(files.values()))))
    return Dataset(events=pd.concat(frames, ignore_index=True))


IMPORTERS: dict[str, Callable[..., Dataset]] = {
    "movielens": import_movielens,
    "lastfm": import_lastfm,
    "taobao": import_taobao,
    "adjacency": import_adjacency,
}


def describe(ds: Dataset) -> dict[str, int]:
    """Rows per present table, distinct users, and events per type ("events.view" …) in funnel order."""
    counts = {table: len(frame) for table in TABLES if (frame := getattr(ds, table)) is not None}
    counts["users"] = int(ds.events["user_id"].nunique())
    per_type = ds.events["event"].value_counts()
    return counts | {f"events.{kind}": int(per_type[kind]) for kind in EVENT_TYPES if kind in per_type.index}


# --- delimited source files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """A delimited source file: path, field separator, column names, and whether line 1 is a header."""

    path: Path
    sep: str
    columns: tuple[str, ...]
    header: bool = False

    def error(self, message: str, row: int | None = None, column: str | None = None) -> DataError:
        """A DataError located in this file."""
        return DataError(message, path=str(self.path), row=row, column=column)

    def data_lines(self) -> Iterator[tuple[int, int, str]]:
        """(data row, file line, text) of each non-empty data line; read lazily, on error paths only."""
        with self.path.open(encoding="utf-8-sig", newline="") as handle:
            row = 0
            for line, text in enumerate(handle, start=1):
                text = text.rstrip("\r\n")
                if text and not (self.header and line == 1):
                    row += 1
                    yield row, line, text


def _source_file(path: Path, pattern: str, what: str) -> Path:
    """`path` when it is a file, else the one file matching `pattern` in the folder `path`."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"not found; expected {what}: the file, or the folder holding it", path=str(path))
    found = sorted(p for p in path.glob(pattern) if p.is_file())
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DataError(f"expected one file matching {pattern!r} ({what}) in this folder; found {names}",
                        path=str(path))
    return found[0]


def _read_cells(src: _Source) -> pd.DataFrame:
    """Every cell as trimmed text (NA where blank), one row per non-empty data line."""
    if src.path.stat().st_size == 0:
        raise src.error(f"file is empty; expected lines of {_layout(src)}")
    read = pa_csv.ReadOptions(column_names=None if src.header else list(src.columns))
    parse = pa_csv.ParseOptions(delimiter=src.sep, quote_char=False)
    convert = pa_csv.ConvertOptions(column_types={name: pa.string() for name in src.columns},
                                    strings_can_be_null=True, null_values=[""])
    try:
        table = pa_csv.read_csv(src.path, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise _parse_error(src, exc) from exc
    _check_header(src, table.column_names)
    trimmed = {name: pc.utf8_trim_whitespace(table[name]) for name in src.columns}
    cells = pa.table(trimmed).to_pandas()  # str columns, NaN where blank
    return cells.mask(cells == "")


def _layout(src: _Source) -> str:
    """The expected line layout, for messages."""
    sep = {"\t": "tab", ",": "comma"}.get(src.sep, repr(src.sep))
    return f"{sep}-separated {' '.join(src.columns)}" + (" after a header line" if src.header else "")


def _check_header(src: _Source, found: list[str]) -> None:
    """A file with a header line must name every expected column."""
    for name in (n for n in src.columns if n not in found):
        raise src.error(f"missing column {name!r} in the header line (found: {', '.join(found)}); "
                        f"expected {_layout(src)}", column=name)


def _parse_error(src: _Source, exc: Exception) -> DataError:
    """Locate a parse failure by rescanning the file (error path only) for the first line of the wrong width."""
    try:
        for row, line, text in src.data_lines():
            if (width := len(text.split(src.sep))) != len(src.columns):
                return src.error(f"{width} fields on line {line}; expected {len(src.columns)}: {_layout(src)}",
                                 row=row)
    except UnicodeDecodeError as err:
        return src.error(f"not UTF-8 text ({err}); expected {_layout(src)}")
    return src.error(f"cannot read it ({exc}); expected {_layout(src)}")


def _reject(src: _Source, bad: np.ndarray, column: str, problem: str, expected: str, values: pd.Series) -> None:
    """Raise for the first row flagged in `bad` (a (n_rows,) bool array), quoting its value for '{value}'."""
    if not bad.any():
        return
    first, more = int(bad.argmax()), int(bad.sum()) - 1
    line = next(line for row, line, _ in src.data_lines() if row == first + 1)
    value = values.iloc[first]
    shown = problem.replace("{value}", "'' (blank)" if pd.isna(value) else repr(value))
    tail = f" (and {more} more row{'' if more == 1 else 's'})" if more else ""
    raise src.error(f"{shown} on line {line}; expected {expected}{tail}", row=first + 1, column=column)


def _require(src: _Source, cells: pd.DataFrame, columns: tuple[str, ...]) -> None:
    """Every listed column has a value on every row."""
    for column in columns:
        _reject(src, cells[column].isna().to_numpy(), column, f"blank {column}", f"a {column} on every line",
                cells[column])


def _integers(src: _Source, cells: pd.DataFrame, column: str) -> np.ndarray:
    """A column of integer text as a (n_rows,) int64 array; DataError at the first cell that is not one."""
    text = cells[column]
    ok = text.str.fullmatch(_INTEGER).to_numpy(dtype=bool, na_value=False)
    _reject(src, ~ok, column, "not an integer: {value}", "a whole number such as 42", text)
    return text.astype("int64").to_numpy()


def _from_seconds(src: _Source, cells: pd.DataFrame, column: str) -> pd.Series:
    """A column of unix seconds as datetime64[ms, UTC]."""
    seconds = _integers(src, cells, column)
    _reject(src, np.abs(seconds) >= _MAX_SECONDS, column, "time stamp out of range: {value}",
            "unix seconds such as 881250949", cells[column])
    return pd.Series((seconds * 1000).astype("datetime64[ms]")).dt.tz_localize("UTC")


# --- adjacency lists --------------------------------------------------------------------------------------


def _start_time(ts: str) -> pd.Timestamp:
    """The base time of adjacency events, as UTC (a time without a zone is UTC)."""
    try:
        return parse_date(ts)
    except ConfigError as exc:
        raise ConfigError(f"ts {ts!r} is not a time; expected ISO-8601 such as {ADJACENCY_TS!r}") from exc


def _check_event_types(files: Mapping[str, Path]) -> None:
    """At least one file, each under a known event type."""
    if not files:
        raise ConfigError("no files given; expected event type -> file, e.g. {'cart': cart.txt, "
                          "'purchase': train.txt}")
    for event in (e for e in files if e not in EVENT_TYPES):
        raise ConfigError(f"unknown event type {event!r} for {files[event]}; expected one of "
                          f"{', '.join(EVENT_TYPES)}")


def _adjacency_events(path: Path, event: str, start: pd.Timestamp) -> pd.DataFrame:
    """One file's (user, item) pairs as validated events of one type, at start + its funnel offset."""
    users, items = _read_adjacency(path)
    frame = pd.DataFrame({"ts": start + pd.Timedelta(seconds=EVENT_TYPES.index(event)), "user_id": users,
                          "video_id": items, "event": event})
    if event in ("purchase", "refund"):
        frame["order_id"] = "o" + _pair_keys(users, items)
        frame["amount"] = UNIT_AMOUNT
        frame["product_id"] = items
    elif event == "share":
        frame["share_id"] = "s" + _pair_keys(users, items)
    return _validated(path, "events", frame)


def _read_adjacency(path: Path) -> tuple[pd.Series, pd.Series]:
    """(user, item) of every pair in file order, as decimal id strings."""
    flat, counts = _tokens(_read_text(path))
    _check_tokens(path, flat, counts)
    ids = pc.cast(pc.cast(flat, pa.int64()), pa.string())  # (n_tokens,) normalized decimal text
    ends = np.cumsum(counts)
    starts = (ends - counts)[counts > 0]  # (n_nonempty_lines,) position of each line's user token
    is_user = np.zeros(len(flat), dtype=bool)
    is_user[starts] = True
    users = pc.take(ids, np.repeat(starts, counts[counts > 0] - 1))
    items = pc.filter(ids, pa.array(~is_user))
    return users.to_pandas().astype("str"), items.to_pandas().astype("str")


def _tokens(text: str) -> tuple[pa.Array, np.ndarray]:
    """Non-empty whitespace-separated tokens in file order, and how many each line holds."""
    lines = pa.array(text.split("\n"))
    split = pc.utf8_split_whitespace(lines)  # (n_lines,) lists; edge whitespace yields '' tokens
    flat = pc.list_flatten(split)  # (n_pieces,)
    keep = pc.not_equal(flat, "")
    line_of = pc.filter(pc.list_parent_indices(split), keep).to_numpy()  # (n_tokens,) 0-based line
    return pc.filter(flat, keep), np.bincount(line_of, minlength=len(lines))  # (n_tokens,), (n_lines,)


def _read_text(path: Path) -> str:
    """The whole file as UTF-8 text; DataError naming the path when it is missing or unreadable."""
    if not path.is_file():
        raise DataError("not found; expected an adjacency list file ('user item item …' per line)",
                        path=str(path))
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read it ({exc}); expected UTF-8 text", path=str(path)) from exc


def _check_tokens(path: Path, flat: pa.Array, counts: np.ndarray) -> None:
    """Every token is an integer id; else a DataError at the first bad one (row = line)."""
    ok = pc.match_substring_regex(flat, f"^{_INTEGER}$").to_numpy(zero_copy_only=False)  # (n_tokens,)
    if ok.all():
        return
    bad = int((~ok).argmax())
    ends = np.cumsum(counts)
    line = int(np.searchsorted(ends, bad, side="right"))  # 0-based line holding the bad token
    column = "user" if bad == ends[line] - counts[line] else "item"
    more = int((~ok).sum()) - 1
    tail = f" (and {more} more bad token{'' if more == 1 else 's'})" if more else ""
    raise DataError(f"not an integer id: {flat[bad].as_py()!r} on line {line + 1}; expected space-separated "
                    f"integer ids, the user then its items{tail}", path=str(path), row=line + 1, column=column)


def _pair_keys(users: pd.Series, items: pd.Series) -> pd.Series:
    """'<user>-<item>-<k>' with k the 1-based count of that pair so far in the file."""
    k = pd.DataFrame({"user": users, "item": items}).groupby(["user", "item"], sort=False).cumcount() + 1
    return users + "-" + items + "-" + k.astype("str")


# --- validation -------------------------------------------------------------------------------------------


def _validated(path: Path, table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The table in canonical dtypes, checked by the per-table rules of load_dataset (event ids derived)."""
    return validate_table(TableFile(path, table), frame.reset_index(drop=True))


def _events(path: Path, events: pd.DataFrame, why: str = "no data rows") -> pd.DataFrame:
    """Validated events; an import that yields none is an error, as an empty events table is for load_dataset."""
    if events.empty:
        raise DataError(f"nothing to import ({why}); expected at least one event", path=str(path))
    return _validated(path, "events", events)
