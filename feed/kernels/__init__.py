"""Compiled loops of the feed's request path (numba, nopython mode, the GIL released while they run).

A feed ranks a few hundred candidates. In numpy every step is a handful of calls of a few µs each on arrays of that
size (~150 calls per feed), and at catalog scale each step also reads its own per-video table, one cache miss per
candidate and table. Here a feed is three compiled calls, one per stage (`sources.candidates`,
`scoring.relevance`, `page.page`), each one pass over the candidates; the Python wrappers in `feed.candidates`,
`feed.features`, `feed.ranker`, `feed.rerank` and `feed.service` keep their signatures, build the arrays once per
model (`feed.serving_tables`) and call the same compiled functions the stages are made of, so tests of those
wrappers test the request path.

Kernels compile on first use and are cached next to their source (`__pycache__`), so later processes load them
in milliseconds; `feed.service.FeedService` runs one feed when it is built (`warm_up`), so that no request pays for
compilation. Every wrapper passes the one dtype and layout a kernel is compiled for.

Floating-point reductions may be reordered (`reassoc`), but never assumed free of NaN or infinity (±inf is a
sentinel here): sums differ from numpy's in the last bits only.
"""

import os
import tempfile
from pathlib import Path

if "NUMBA_CACHE_DIR" not in os.environ and not os.access(Path(__file__).parent, os.W_OK):
    # an installed, read-only package: numba's own fallback (~/.cache) may be missing too (no home directory)
    try:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home directory at all
        home = Path(tempfile.gettempdir())
    usable = os.access(home if home.exists() else home.parent, os.W_OK)
    os.environ["NUMBA_CACHE_DIR"] = str((home if usable else Path(tempfile.gettempdir())) / "selfretail-feed" / "numba")
