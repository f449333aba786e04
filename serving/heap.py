"""Keep Python's full garbage collections short while serving.

A full (generation 2) collection walks every object the collector tracks, with the GIL held. A serving process
holds ~300k of them (numpy, pandas, FAISS, FastAPI and numba, plus the model): at 1M videos a full collection
took 80–150 ms here. They are rare once the model is loaded (one comes when the objects that survived since the
last one reach a quarter of it: the live-state cache and the last store reads grow that way), but each one
stalls every request in flight for its whole length.

`settle` runs after each model load: it collects what the previous model left (one full collection per model
version, which the collector would have done anyway) and moves every object alive into the permanent generation
(`gc.freeze`), which collections skip; the later ones only walk what requests and refreshes made since. A catalog
refresh needs nothing: the service it replaces is freed by reference counting (tests/serving/test_heap.py).
`release` undoes the freeze when the app stops, so that an embedding process (a test session) can collect it.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("serving.heap")


def settle() -> float:
    """Collect the garbage there is, then exempt everything alive from later collections; returns the seconds
    it took (the caller's thread holds the GIL meanwhile: call it when a model has just been loaded)."""
    start = time.perf_counter()
    gc.unfreeze()  # what earlier loads froze and is garbage now (the previous model) must be collectable
    gc.collect()
    gc.freeze()
    seconds = time.perf_counter() - start
    log.info("heap settled: %d objects exempt from collection (%.0f ms)", gc.get_freeze_count(), seconds * 1000)
    return seconds


def release() -> None:
    """Make the frozen objects collectable again (the app is stopping)."""
    gc.unfreeze()
