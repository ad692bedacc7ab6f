"""The event-loop watch: a callback that holds the loop shows up as a late wake-up, in the metrics too."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from streams.ops.loop_lag import LAG_BUCKETS_S, LoopLag, loop_lag_families


class _Families(Collector):
    def __init__(self, watches: list[LoopLag]) -> None:
        self.watches = watches

    def collect(self):
        return loop_lag_families(self.watches)


async def test_a_loop_held_by_a_blocking_callback_is_reported_late():
    watch = LoopLag("live", interval_s=0.01)
    watch.start()
    try:
        await asyncio.sleep(0.05)  # a few wake-ups on an idle loop
        time.sleep(0.06)  # a callback that holds the loop: everything due meanwhile waits
        await asyncio.sleep(0.03)
    finally:
        await watch.stop()

    assert sum(watch.counts) >= 3
    assert watch.worst_s >= 0.05  # the wake-up due during the hold came after it
    assert sum(watch.counts[LAG_BUCKETS_S.index(0.05) + 1:]) >= 1
    registry = CollectorRegistry()
    registry.register(_Families([watch]))
    text = generate_latest(registry).decode()
    assert f'scoreline_event_loop_lag_seconds_count{{loop="live"}} {float(sum(watch.counts))}' in text
    assert 'scoreline_event_loop_lag_max_seconds{loop="live"}' in text


def test_no_watch_no_family():
    assert list(loop_lag_families([])) == []
