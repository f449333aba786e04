"""Opaque pagination cursors: the request seed, the page number and what earlier pages showed.

A cursor is base64url of a record (format byte, seed, page, the 32-bit hashes of every video id shown so far)
followed by a CRC32, so a truncated or edited cursor is rejected with `CursorError` instead of silently serving
repeats. Format 1 zlib-compressed the record; id hashes are random bytes that do not compress, so format 2 stores
it as it is (compressing cost more than the rest of encoding). Format-1 cursors, issued before, still decode.
Hashing ids (not rows) keeps a cursor valid across model reloads. A hash collision can only hide one extra video;
it can never show a video twice.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from feed.errors import FeedError

FORMAT = 2  # what `encode` writes
ZLIB_FORMAT = 1  # the record compressed (a zlib stream: its first byte is 0x78, never FORMAT); still read
_HEAD = struct.Struct("<BIH")  # format, seed, page
MAX_SHOWN = 10_000  # hashes a cursor may carry: decoding never inflates more than this
MAX_PAGE = 65_535


class CursorError(FeedError):
    """A cursor that this service did not issue, or that was damaged on the way."""


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts."""

    seed: int
    page: int
    shown: np.ndarray  # (n,) uint32 hashes of the video ids on earlier pages

    def encode(self) -> str:
        """The opaque string handed to the client."""
        body = _HEAD.pack(FORMAT, self.seed, self.page) + self.shown.astype("<u4").tobytes()
        return base64.urlsafe_b64encode(body + struct.pack("<I", zlib.crc32(body))).decode().rstrip("=")

    def next(self, seed: int, shown: np.ndarray, max_items: int) -> Cursor | None:
        """The cursor after a page that showed videos with these `id_hashes`; None at the maximum depth."""
        shown = np.concatenate([self.shown, shown.astype(np.uint32)])
        if len(shown) >= min(max_items, MAX_SHOWN) or self.page + 1 > MAX_PAGE:
            return None
        return Cursor(seed, self.page + 1, shown)

    @classmethod
    def first(cls, seed: int) -> Cursor:
        """The state before the first page."""
        return cls(seed, 0, np.zeros(0, dtype=np.uint32))

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse a cursor from `encode`; CursorError says what is wrong."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError) as exc:
            raise CursorError("cursor is not base64url: pass back next_cursor exactly as received") from exc
        if len(raw) < 5 or zlib.crc32(raw[:-4]) != struct.unpack("<I", raw[-4:])[0]:
            raise CursorError("cursor checksum does not match: it was truncated or changed")
        body = raw[:-4] if raw[0] == FORMAT else _inflated(raw[:-4])
        if len(body) > _HEAD.size + 4 * MAX_SHOWN:
            raise CursorError(f"cursor is larger than any this service issues (at most {MAX_SHOWN} videos)")
        try:
            fmt, seed, page = _HEAD.unpack_from(body)
        except struct.error as exc:
            raise CursorError("cursor content is damaged: pass back next_cursor exactly as received") from exc
        if fmt != (FORMAT if raw[0] == FORMAT else ZLIB_FORMAT) or (len(body) - _HEAD.size) % 4:
            raise CursorError(f"cursor format {fmt} is not supported (expected {FORMAT})")
        return cls(seed, page, np.frombuffer(body[_HEAD.size:], dtype="<u4").astype(np.uint32))


def _inflated(packed: bytes) -> bytes:
    """The record of a format-1 (zlib) cursor, never inflating beyond the largest cursor this service issues."""
    try:
        inflate = zlib.decompressobj()
        body = inflate.decompress(packed, _HEAD.size + 4 * MAX_SHOWN)
    except zlib.error as exc:
        raise CursorError("cursor content is damaged: pass back next_cursor exactly as received") from exc
    if inflate.unconsumed_tail or not inflate.eof:
        raise CursorError(f"cursor is larger than any this service issues (at most {MAX_SHOWN} videos)")
    return body


def id_hashes(ids: np.ndarray) -> np.ndarray:
    """(n,) uint32 stable hashes of string ids (the same in every process and version of this format)."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.uint32)
    return (pd.util.hash_array(np.asarray(ids, dtype=object)) & 0xFFFFFFFF).astype(np.uint32)
