"""Impression logging off the request path: a bounded queue drained by one writer thread.

`offer` never blocks a feed response: when the queue is full the page is dropped and counted. The writer
stores pages in batches; a failed write is counted (and its pages dropped) rather than retried forever.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import pandas as pd

from feed.service import Feed

log = logging.getLogger("serving.impressions")


@dataclass
class ImpressionStats:
    """Counters exported on /metrics."""

    pages_logged: int = 0
    impressions_logged: int = 0
    pages_dropped: int = 0
    write_errors: int = 0


class ImpressionLogger:
    """Logs every feed page's items (request_id, position, video, source) to the event store."""

    def __init__(self, store: object, capacity: int = 10_000, batch_pages: int = 200) -> None:
        self.store, self.batch_pages = store, batch_pages
        self.stats = ImpressionStats()
        self._queue: queue.Queue[tuple[Feed, int] | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
        self._thread.start()

    def offer(self, feed: Feed) -> None:
        """Queue a page for logging without waiting; a full queue drops it (counted)."""
        try:
            self._queue.put_nowait((feed, int(time.time() * 1000)))
        except queue.Full:
            self.stats.pages_dropped += 1

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer (never waits longer than `timeout`)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.error("impression writer is stuck; %d pages not logged", self._queue.qsize())
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        """Drain the queue in batches until `close`."""
        while True:
            first = self._queue.get()
            batch = [first] if first is not None else []
            while first is not None and len(batch) < self.batch_pages:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    first = None
                    break
                batch.append(item)
            if batch:
                self._write(batch)
            if first is None:
                return

    def _write(self, batch: list[tuple[Feed, int]]) -> None:
        """Store a batch of pages; failures are counted, not raised."""
        rows = impression_rows(batch)
        try:
            self.store.log_impressions(rows)
        except Exception:  # the store is outside this thread's control; the request path must not see it
            self.stats.write_errors += 1
            self.stats.pages_dropped += len(batch)
            log.exception("could not store %d impressions", len(rows))
            return
        self.stats.pages_logged += len(batch)
        self.stats.impressions_logged += len(rows)


def impression_rows(batch: list[tuple[Feed, int]]) -> pd.DataFrame:
    """One row per shown item: request_id, user_id, position (0-based), video_id, source, ts."""
    rows = [(feed.request_id, feed.user_id, position, item.video_id, item.source, ts)
            for feed, ts in batch for position, item in enumerate(feed.items)]
    frame = pd.DataFrame(rows, columns=["request_id", "user_id", "position", "video_id", "source", "ts"])
    frame["ts"] = pd.to_datetime(frame["ts"], unit="ms", utc=True).astype("datetime64[ms, UTC]")
    return frame
