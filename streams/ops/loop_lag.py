"""How late an event loop runs what is ready: the wait every record, ack and timer on that loop pays.

A loop that runs a long callback (a large batch decoded, a join, a slow metrics scrape) makes
everything else ready on it wait: a reply that arrived, a fetch response, a heartbeat. Consumer
lag does not show that, nor does the time a model takes. :class:`LoopLag` measures it as Node's
``monitorEventLoopDelay`` does: a task asks to wake every ``interval_s`` and records how late
it woke. Python's selector waits in whole milliseconds, so lateness under about 1 ms is the
clock's, not the loop's.

Each pipeline watches its live loop (router and workers) and, when the side roles run on a
loop of their own (``PipelineOptions.side_loop``), that one too; the metrics expose both as
``scoreline_event_loop_lag_seconds{loop}``, a histogram, and ``scoreline top`` shows p50, p99
and the worst per process.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

__all__ = ["LAG_BUCKETS_S", "LoopLag", "loop_lag_families"]

LAG_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
"Seconds a wake-up came late."


class LoopLag:
    """Watches the loop it is started on: how late a wake-up due every ``interval_s`` comes."""

    def __init__(self, loop_name: str, interval_s: float = 0.05) -> None:
        self.loop_name = loop_name
        self.interval_s = interval_s
        self.counts = [0] * (len(LAG_BUCKETS_S) + 1)
        self.sum_s = 0.0
        self.worst_s = 0.0
        """The latest wake-up so far."""
        self._task: asyncio.Task[None] | None = None

    def observe(self, late_s: float) -> None:
        self.counts[bisect.bisect_left(LAG_BUCKETS_S, late_s)] += 1
        self.sum_s += late_s
        self.worst_s = max(self.worst_s, late_s)

    def start(self) -> None:
        """Start watching the running loop (call on that loop)."""
        self._task = asyncio.get_running_loop().create_task(self._watch(), name=f"scoreline-loop-lag-{self.loop_name}")

    async def stop(self) -> None:
        """Stop watching (call on the loop it watches)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.observe(max(0.0, loop.time() - due))


def loop_lag_families(watches: Iterable[LoopLag]) -> Iterator[Metric]:
    """The watched loops' lateness, for a scrape: a histogram and the worst so far, by loop."""
    watches = list(watches)
    if not watches:
        return
    lag = HistogramMetricFamily("scoreline_event_loop_lag_seconds", "How late the event loop woke a task that was "
                                "due (every 50 ms): what anything ready on that loop waits.", labels=["loop"])
    worst = GaugeMetricFamily("scoreline_event_loop_lag_max_seconds", "The latest wake-up of the loop since start.",
                              labels=["loop"])
    for watch in watches:
        cumulative = list(itertools.accumulate(watch.counts))
        lag.add_metric([watch.loop_name], [(str(b), n) for b, n in zip((*LAG_BUCKETS_S, "+Inf"), cumulative)],
                       sum_value=watch.sum_s)
        worst.add_metric([watch.loop_name], watch.worst_s)
    yield lag
    yield worst
