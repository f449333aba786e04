"""The ledger worker: every few seconds, append the entries owed by newly stored events and due settlements.

Every replica runs one; the store's lock makes them take turns, and processing is idempotent, so running
several is safe and any one of them keeps the ledger current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from feed.attribution import LedgerRules
from feed.errors import FeedError
from feed.store import ledger
from feed.store.store import EventStore
from serving.metrics import Counters

log = logging.getLogger("serving.ledger")


async def keep_ledger(store: EventStore, rules: LedgerRules, interval_s: float, counters: Counters) -> None:
    """Process the ledger queue until cancelled: at once while there is a backlog, else every `interval_s`."""
    while True:
        remaining = await ledger_pass(store, rules, counters)
        await asyncio.sleep(0 if remaining else interval_s)


async def ledger_pass(store: EventStore, rules: LedgerRules, counters: Counters) -> int:
    """One processing pass off the event loop; returns the queue rows left (0 after a store error)."""
    try:
        run = await _finish(asyncio.ensure_future(asyncio.to_thread(store.process_ledger, rules)))
    except FeedError as exc:  # the store is down or busy: the queue keeps the work for the next pass
        counters.add(ledger_errors=1)
        log.warning("ledger update failed; will try again: %s", exc)
        return 0
    counters.add(ledger_entries=run.entries)
    return run.remaining


async def _finish(task: asyncio.Future) -> ledger.LedgerRun:
    """The pass's result; when cancelled (shutdown), the transaction still ends before the store closes."""
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise
