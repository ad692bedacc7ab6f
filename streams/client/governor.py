"""A backfill that governs itself: its window of requests in flight follows live traffic's latency.

Live traffic is served first at every batch, but a batch of backfill work in hand still delays
the live records that arrive behind it, and the more backfill is in flight, the bigger those
batches are. So the backfill watches what live users get (the workers' live result latency,
``scoreline_result_latency_seconds{role="worker", traffic="live"}``, from their metrics) and
sizes its window by it, additive increase and multiplicative decrease, once a second:

- no live results in the last second (nothing to protect): the window doubles;
- live p99 above ``tolerance`` x its baseline (and at least ``slack`` above it): the window
  halves;
- otherwise it grows by a quarter;

never below ``min_window`` nor above the backfill's ``--window``. The window starts at
``min_window`` (slow start), so the first live measurement is taken with little backfill in
flight; that measurement is the **baseline**, which then follows the lowest p99 seen and
drifts up 5 % a second, so that a real rise of live latency (more live load, a slower model)
stops holding the backfill back after a while instead of forever.

Limits (docs/clients.md): it sees only the workers whose metrics it reads, so a deployment of
many processes needs each worker's endpoint; p99 comes from histogram buckets (1, 2.5, 5, 10,
25, 50 ms...), so it reacts to rises the bucket bounds can show; below about ten live results a
second there is too little to measure and the backfill runs at its whole window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from streams.quantiles import bucket_quantile

__all__ = ["Governor", "LiveSignal", "MetricsSignal", "live_buckets_of"]

log = logging.getLogger(__name__)

LATENCY_FAMILY = "scoreline_result_latency_seconds"


class LiveSignal(Protocol):
    """Where the governor reads live latency."""

    async def live_buckets(self) -> dict[float, float] | None:
        """Cumulative counts of live results per latency bucket bound (seconds), summed over the workers
        read; None when none could be read."""
        ...


def live_buckets_of(text: str) -> dict[float, float]:
    """Sum the workers' live latency buckets in one Prometheus exposition."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != LATENCY_FAMILY:
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_bucket") and labels.get("role") == "worker" \
                    and labels.get("traffic") == "live":
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


class MetricsSignal:
    """Live latency from metrics expositions: HTTP endpoints, or a pipeline in this process."""

    def __init__(self, sources: Sequence[Callable[[], Awaitable[bytes]]]) -> None:
        self.sources = list(sources)

    @classmethod
    def from_urls(cls, urls: Sequence[str], timeout: float = 1.0) -> MetricsSignal:
        def fetcher(url: str) -> Callable[[], Awaitable[bytes]]:
            def get() -> bytes:
                with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a metrics URL
                    return bytes(response.read())
            return lambda: asyncio.to_thread(get)
        return cls([fetcher(u) for u in urls])

    @classmethod
    def from_exposition(cls, exposition: Callable[[], bytes]) -> MetricsSignal:
        async def get() -> bytes:
            return exposition()
        return cls([get])

    async def live_buckets(self) -> dict[float, float] | None:
        total: dict[float, float] = {}
        read = 0
        for source in self.sources:
            try:
                text = (await source()).decode()
            except Exception as exc:  # noqa: BLE001 - an endpoint that does not answer is skipped this round
                log.debug("metrics source unreadable: %s", exc)
                continue
            read += 1
            for bound, count in live_buckets_of(text).items():
                total[bound] = total.get(bound, 0.0) + count
        return total if read else None


class Governor:
    """The window rule of the module docstring; :meth:`observe` is the whole decision, kept pure."""

    def __init__(self, max_window: int, *, min_window: int = 16, tolerance: float = 1.5, slack: float = 0.002,
                 min_live: int = 10, interval: float = 1.0) -> None:
        self.max_window = max_window
        self.min_window = min(min_window, max_window)
        self.tolerance = tolerance
        self.slack = slack
        self.min_live = min_live
        self.interval = interval
        self.window = self.min_window
        self.baseline: float | None = None
        self.last_p99: float | None = None
        self.backoffs = 0
        self.lowest = self.window
        self.signal_read = False

    def observe(self, live_count: float, p99: float | None) -> int:
        """One interval's live results and their p99 (seconds); returns the new window."""
        if live_count < self.min_live or p99 is None:
            self.window = min(self.max_window, self.window * 2)
            return self.window
        self.last_p99 = p99
        if self.baseline is None:
            self.baseline = p99
        else:
            self.baseline = min(p99, self.baseline * 1.05)
        if p99 > max(self.baseline * self.tolerance, self.baseline + self.slack):
            self.window = max(self.min_window, self.window // 2)
            self.backoffs += 1
            self.lowest = min(self.lowest, self.window)
        else:
            self.window = min(self.max_window, self.window + max(1, self.window // 4))
        return self.window

    @contextlib.asynccontextmanager
    async def watching(self, signal: LiveSignal) -> AsyncIterator[Governor]:
        """Follow ``signal`` in the background while the block runs."""
        task = asyncio.create_task(self._follow(signal), name="backfill-governor")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self, signal: LiveSignal) -> None:
        before = await signal.live_buckets()
        while True:
            await asyncio.sleep(self.interval)
            now = await signal.live_buckets()
            if now is None:
                continue  # nothing readable: keep the window as it is
            self.signal_read = True
            delta = _delta(before, now)
            before = now
            if delta is None:
                continue  # a counter went back (a worker restarted): skip this interval
            count = delta[max(delta)] if delta else 0.0
            self.observe(count, bucket_quantile(0.99, delta))

    def summary(self) -> dict[str, Any]:
        """What the governor did, for the backfill's summary."""
        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1000, 2)
        return {"governed": True, "max": self.max_window, "final": self.window, "lowest": self.lowest,
                "backoffs": self.backoffs, "baseline_live_p99_ms": ms(self.baseline),
                "last_live_p99_ms": ms(self.last_p99), "signal_read": self.signal_read}


def _delta(before: dict[float, float] | None, now: dict[float, float]) -> dict[float, float] | None:
    if before is None:
        return {}
    delta = {bound: count - before.get(bound, 0.0) for bound, count in now.items()}
    return None if any(v < 0 for v in delta.values()) else delta
