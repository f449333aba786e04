"""Service counters, exposed at GET /metrics in the Prometheus text format."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class Counters:
    """Monotonic counters of what the service did (thread-safe increments)."""

    events_inserted: int = 0
    events_duplicate: int = 0
    event_batches_rejected: int = 0
    event_store_errors: int = 0
    feeds_served: int = 0
    ledger_entries: int = 0
    ledger_errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: int) -> None:
        """Increase counters by name."""
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def values(self) -> dict[str, int]:
        """Every counter by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


def render(counters: dict[str, float], gauges: dict[str, float], labels: dict[str, str]) -> str:
    """Prometheus text exposition: counters get `_total`, gauges are plain; labels go on an info metric."""
    lines = []
    for name, value in counters.items():
        lines += [f"# TYPE feed_{name}_total counter", f"feed_{name}_total {value}"]
    for name, value in gauges.items():
        lines += [f"# TYPE feed_{name} gauge", f"feed_{name} {value}"]
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    lines += ["# TYPE feed_model_info gauge", f"feed_model_info{{{label_text}}} 1"]
    return "\n".join(lines) + "\n"
