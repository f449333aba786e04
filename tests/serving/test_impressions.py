"""The impression logger never blocks: a full queue drops pages and counts them; nothing is counted twice."""

from __future__ import annotations

from feed.service import Feed, FeedItem
from feed.store.store import EventStore
from serving.impressions import ImpressionLogger


def page(n: int) -> Feed:
    items = [FeedItem(f"v{i}", "c1", None, 1.0 - i / 10, "popular now", "popular") for i in range(5)]
    return Feed(f"r{n}", f"u{n % 7}", items, "test", cold_start=True)


def test_overflow_drops_and_counts_pages_without_blocking(tmp_path):
    store = EventStore(f"sqlite:///{tmp_path / 's.db'}")
    store.upgrade()
    logger = ImpressionLogger(store, capacity=2, batch_pages=1)
    for n in range(500):  # far faster than one fsync per stored page
        logger.offer(page(n))
    logger.close()
    stats = logger.stats
    assert stats.pages_dropped > 0 and stats.write_errors == 0
    assert stats.pages_logged + stats.pages_dropped == 500
    assert store.count("impressions") == stats.impressions_logged == 5 * stats.pages_logged
    store.close()
