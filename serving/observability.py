"""What operators see: per-route request counts and latency histograms, feed stage histograms, request ids in
every log line of a request, and JSON log lines.

Each request gets a server-made `request_id` (128 random bits in 32 hex digits), returned in `X-Request-ID` and
used as the feed's `request_id`; a client's own `X-Request-ID` is kept as `client_request_id` in the access log.
Routes are labelled by their template (`/v1/users/{user_id}/feed`), never the raw path, so the label set stays
small.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import random
import re
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)  # seconds
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("serving.access")
# request ids: a generator of this module's own (seeded from the OS, again in a forked child), not the `random`
# module's, which other code may seed; os.urandom's system call per request (uuid4) cost ~1 % of a feed's time
_IDS = random.Random()
os.register_at_fork(after_in_child=_IDS.seed)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Histogram:
    """Counts of observations per bucket, their sum and count, per label tuple (thread-safe)."""

    def __init__(self, buckets: Iterable[float] = BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self._counts: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0] * (len(self.buckets) + 1))
        self._sums: dict[tuple[str, ...], float] = defaultdict(float)
        self._lock = threading.Lock()

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        """Record one observation."""
        with self._lock:
            self._counts[labels][bisect_left(self.buckets, value)] += 1
            self._sums[labels] += value

    def render(self, name: str, label_names: tuple[str, ...]) -> list[str]:
        """Prometheus text lines: cumulative `_bucket{le=…}`, `_sum`, `_count` per label tuple."""
        lines = [f"# TYPE {name} histogram"]
        with self._lock:
            snapshot = {k: (list(v), self._sums[k]) for k, v in self._counts.items()}
        for labels, (counts, total) in sorted(snapshot.items()):
            base = _labels(label_names, labels)
            running = 0
            for bound, count in zip((*map(_number, self.buckets), "+Inf"), counts, strict=True):
                running += count
                lines.append(f'{name}_bucket{{{base}{"," if base else ""}le="{bound}"}} {running}')
            lines += [f"{name}_sum{{{base}}} {total:.6f}", f"{name}_count{{{base}}} {running}"]
        return lines


class LabelledCounter:
    """Counts per label tuple (thread-safe)."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, ...], float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, labels: tuple[str, ...], amount: float = 1) -> None:
        """Increase one label tuple's count."""
        with self._lock:
            self._values[labels] += amount

    def render(self, name: str, label_names: tuple[str, ...]) -> list[str]:
        """Prometheus text lines of the counter."""
        with self._lock:
            snapshot = dict(self._values)
        return [f"# TYPE {name} counter"] + [f"{name}{{{_labels(label_names, k)}}} {_number(v)}"
                                              for k, v in sorted(snapshot.items())]


class Telemetry:
    """The labelled metrics of one app: HTTP requests, feed stages and candidate sources."""

    def __init__(self) -> None:
        self.requests = LabelledCounter()  # (route, method, status)
        self.latency = Histogram()  # (route, method)
        self.stages = Histogram()  # (stage,)
        self.candidates = LabelledCounter()  # (source,)

    def record_feed(self, timings: dict[str, float], sources: dict[str, int]) -> None:
        """One feed's stage durations (seconds) and candidates per source."""
        for stage, seconds in timings.items():
            self.stages.observe((stage,), seconds)
        for source, count in sources.items():
            self.candidates.add((source,), count)

    def render(self) -> str:
        """Every labelled metric in the Prometheus text format."""
        lines = self.requests.render("feed_http_requests_total", ("route", "method", "status"))
        lines += self.latency.render("feed_http_request_duration_seconds", ("route", "method"))
        lines += self.stages.render("feed_stage_duration_seconds", ("stage",))
        lines += self.candidates.render("feed_candidates_total", ("source",))
        return "\n".join(lines) + "\n"


class ObserveRequests:
    """ASGI middleware: a request id for the request's logs and response, its count and latency, one access log."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app, self.telemetry = app, telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, status = f"{_IDS.getrandbits(128):032x}", [500]
        token = REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status[0], time.perf_counter() - start)
            REQUEST_ID.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        """Count the request, observe its latency and write its access log line."""
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.telemetry.requests.add((route, scope["method"], str(status)))
        self.telemetry.latency.observe((route, scope["method"]), seconds)
        if not access_log.isEnabledFor(logging.INFO):  # the fields below cost more than the check
            return
        access_log.info("%s %s %d %.1f ms", scope["method"], route, status, seconds * 1000, extra={
            "method": scope["method"], "route": route, "path": scope["path"], "status": status,
            "duration_ms": round(seconds * 1000, 3), "client_request_id": _client_id(scope)})


def _client_id(scope: Scope) -> str | None:
    """The client's own X-Request-ID, when it is a plausible id (else None: never log arbitrary bytes)."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _CLIENT_ID.fullmatch(text) else None
    return None


# --- logs -------------------------------------------------------------------------------------------------

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "color_message"}


class RequestIdFilter(logging.Filter):
    """Stamp every record with the current request's id (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
                 "request_id": getattr(record, "request_id", None)}
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


JsonFormatter.converter = time.gmtime


def configure_logging(level: str, fmt: str) -> dict[str, Any]:
    """Root and uvicorn logging to stderr, as JSON lines or text; returns the dictConfig (for uvicorn)."""
    formatter = {"()": JsonFormatter} if fmt == "json" else {
        "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    config = {
        "version": 1, "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"main": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["request_id"],
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # our access log replaces uvicorn's (it has the route template, the latency and the request id)
        "loggers": {"uvicorn": {"level": level.upper()}, "uvicorn.access": {"level": "WARNING"}},
    }
    logging.config.dictConfig(config)
    return config


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    """name="value",… with Prometheus escaping."""
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _escape(value: str) -> str:
    """A label value escaped for the text format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    """An integer-valued float without its '.0'."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))

