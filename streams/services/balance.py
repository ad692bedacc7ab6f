"""Where a request with no shard key goes: the less loaded of two partitions drawn at random.

A keyed request has its partition fixed by its key (per-user facts stay on one consumer). A
keyless one has no locality to keep, so the router may put it anywhere; spreading such requests
evenly piles them up behind a partition whose worker is slow (a noisy node, a cold model, a
long GC). Power of two choices avoids that without herding: each keyless request draws two
partitions and takes the one with less work waiting, so a slow partition gets fewer requests
while no single "least loaded" partition is flooded by every router at once.

A partition's load is the workers' lag on it (its end offset less their group's committed
offset) as this router last read it (:class:`~streams.transport.protocols.LagReader`, every
:data:`REFRESH_S`), plus what this router has put on it since that reading: between two
readings the estimate grows with the router's own sends, so a burst does not all land on the
partition that was idlest a second ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable

from streams.transport.protocols import LagReader, TopicPartition

__all__ = ["PartitionLoad", "LagPoller", "REFRESH_S"]

log = logging.getLogger(__name__)

REFRESH_S = 0.5
"""How often the router reads the workers' lag: a few batches' worth of time, a cheap request to the broker."""


class PartitionLoad:
    """Per-partition load estimates for a router's output topics, and the two-choice pick over them."""

    __slots__ = ("_lag", "_since", "_rng", "readings")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._lag: dict[str, list[int]] = {}
        """Topic -> the workers' lag per partition, as last read."""
        self._since: dict[str, list[int]] = {}
        """Topic -> records this router put on each partition since that reading."""
        self._rng = rng or random.Random()
        self.readings = 0
        """How many lag readings have been taken in (0: every partition counts as idle)."""

    def learn(self, topic: str, lags: dict[int, int], partitions: int) -> None:
        """Take in a reading of ``topic``'s lag (partition -> records); what was sent before it is counted in it."""
        self._lag[topic] = [max(0, lags.get(p, 0)) for p in range(partitions)]
        self._since[topic] = [0] * partitions
        self.readings += 1

    def sent(self, topic: str, partition: int) -> None:
        """Count one record put on ``partition`` of ``topic`` since the last reading."""
        since = self._since.get(topic)
        if since is not None and partition < len(since):
            since[partition] += 1

    def load(self, topic: str, partition: int) -> int:
        """The estimated records waiting on ``partition`` of ``topic``."""
        lag, since = self._lag.get(topic), self._since.get(topic)
        if lag is None or since is None or partition >= len(lag):
            return 0
        return lag[partition] + since[partition]

    def pick(self, topic: str, partitions: int) -> int:
        """The less loaded of two distinct partitions drawn at random (either one on a tie); counts the send."""
        if partitions <= 1:
            return 0
        since = self._since.get(topic)
        if since is None or len(since) != partitions:  # never read, or the topic grew: all idle until read
            self._lag[topic], self._since[topic] = [0] * partitions, [0] * partitions
        a = self._rng.randrange(partitions)
        b = self._rng.randrange(partitions - 1)
        b += b >= a  # a second partition, never the first one again
        chosen = b if self.load(topic, b) < self.load(topic, a) else a
        self._since[topic][chosen] += 1
        return chosen


class LagPoller:
    """Reads the workers' lag on the router's output topics every ``interval`` and feeds a :class:`PartitionLoad`.

    ``targets`` says, at each reading, which topics to read with which partition count and the
    consumer group that works them (``(group, topic, partitions)``). A failed reading is logged
    once and leaves the last estimates in place: balancing degrades to the router's own counts.
    """

    def __init__(self, reader: LagReader, load: PartitionLoad,
                 targets: Callable[[], Iterable[tuple[str, str, int]]], *, interval: float = REFRESH_S) -> None:
        self.reader = reader
        self.load = load
        self.targets = targets
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._connected = False

    async def start(self) -> None:
        """Start reading in the background; the reader connects there, so a cluster that cannot be reached
        now never holds up (or fails) the router's own start."""
        self._task = asyncio.create_task(self._run(), name="scoreline-router-lag")

    async def stop(self) -> None:
        """Stop reading and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._connected:
            self._connected = False
            with contextlib.suppress(Exception):  # closing a client whose connection is gone must not fail a stop
                await self.reader.stop()

    async def read_once(self) -> None:
        """Read every target's lag now and take it in."""
        by_group: dict[str, list[tuple[str, int]]] = {}
        for group, topic, partitions in self.targets():
            by_group.setdefault(group, []).append((topic, partitions))
        for group, topics in by_group.items():
            tps = [TopicPartition(t, p) for t, n in topics for p in range(n)]
            lags = await self.reader.lag(group, tps)
            for topic, partitions in topics:
                self.load.learn(topic, {tp.partition: n for tp, n in lags.items() if tp.topic == topic}, partitions)

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            try:
                if not self._connected:
                    await asyncio.wait_for(self.reader.start(), timeout=10.0)
                    self._connected = True
                await asyncio.wait_for(self.read_once(), timeout=max(5.0, 4 * self.interval))
                if self._failing:
                    log.info("router: reading the workers' lag again")
                self._failing = False
            except Exception as exc:  # noqa: BLE001 - a reading is advice; routing goes on without it
                if not self._failing:
                    log.warning("router: cannot read the workers' lag (%r); keyless requests are balanced "
                                "by this router's own sends until it can", exc)
                self._failing = True
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - began)))
